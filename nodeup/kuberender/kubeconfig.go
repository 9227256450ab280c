package kuberender

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// KubeconfigClusterName names the single cluster entry of the kubeconfigs
// Kubeconfig renders; the user and the context are named after the user.
const KubeconfigClusterName = "local"

// Credentials are how a kubeconfig's user authenticates: a client
// certificate and key (PEM), or a bearer token.
type Credentials struct {
	ClientCertPEM, ClientKeyPEM []byte
	Token                       string
}

// KubeconfigSpec is one kubeconfig with one cluster, user and context.
type KubeconfigSpec struct {
	// Server is the API server's https:// URL.
	Server string
	// CAPEM is the certificate (PEM) the API server's serving certificate
	// must chain to.
	CAPEM []byte
	// User names the user entry and the context.
	User        string
	Credentials Credentials
}

// Kubeconfig renders a kubeconfig with client-go's writer. The result holds
// credentials: write it with mode 0600.
func Kubeconfig(s KubeconfigSpec) ([]byte, error) {
	u, err := url.Parse(s.Server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("kubeconfig server %q: want an https:// URL with a host", s.Server)
	}
	if len(s.CAPEM) == 0 {
		return nil, errors.New("kubeconfig: no CA certificate")
	}
	if strings.TrimSpace(s.User) == "" {
		return nil, errors.New("kubeconfig: empty user name")
	}
	c := s.Credentials
	hasCert := len(c.ClientCertPEM) > 0 || len(c.ClientKeyPEM) > 0
	switch {
	case hasCert && c.Token != "":
		return nil, errors.New("kubeconfig: both a client certificate and a token")
	case hasCert && (len(c.ClientCertPEM) == 0 || len(c.ClientKeyPEM) == 0):
		return nil, errors.New("kubeconfig: client certificate without its key, or key without certificate")
	case !hasCert && c.Token == "":
		return nil, errors.New("kubeconfig: no credentials (client certificate or token)")
	}
	cfg := clientcmdapi.NewConfig()
	cluster := clientcmdapi.NewCluster()
	cluster.Server = s.Server
	cluster.CertificateAuthorityData = s.CAPEM
	cfg.Clusters[KubeconfigClusterName] = cluster
	auth := clientcmdapi.NewAuthInfo()
	auth.ClientCertificateData = c.ClientCertPEM
	auth.ClientKeyData = c.ClientKeyPEM
	auth.Token = c.Token
	cfg.AuthInfos[s.User] = auth
	ctx := clientcmdapi.NewContext()
	ctx.Cluster = KubeconfigClusterName
	ctx.AuthInfo = s.User
	cfg.Contexts[s.User] = ctx
	cfg.CurrentContext = s.User
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return nil, fmt.Errorf("rendering kubeconfig: %w", err)
	}
	return b, nil
}

// CurrentKubeconfig is what a kubeconfig's current context points at.
type CurrentKubeconfig struct {
	Server      string
	CAPEM       []byte
	Credentials Credentials
}

// ParseKubeconfig reads a kubeconfig with client-go's loader and returns
// its current context's cluster and user.
func ParseKubeconfig(b []byte) (*CurrentKubeconfig, error) {
	cfg, err := clientcmd.Load(b)
	if err != nil {
		return nil, err
	}
	ctx, ok := cfg.Contexts[cfg.CurrentContext]
	if !ok {
		return nil, fmt.Errorf("current context %q not found", cfg.CurrentContext)
	}
	cl, ok := cfg.Clusters[ctx.Cluster]
	if !ok {
		return nil, fmt.Errorf("cluster %q of context %q not found", ctx.Cluster, cfg.CurrentContext)
	}
	au, ok := cfg.AuthInfos[ctx.AuthInfo]
	if !ok {
		return nil, fmt.Errorf("user %q of context %q not found", ctx.AuthInfo, cfg.CurrentContext)
	}
	return &CurrentKubeconfig{
		Server: cl.Server,
		CAPEM:  cl.CertificateAuthorityData,
		Credentials: Credentials{
			ClientCertPEM: au.ClientCertificateData,
			ClientKeyPEM:  au.ClientKeyData,
			Token:         au.Token,
		},
	}, nil
}
