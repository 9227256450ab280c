package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"gopkg.in/yaml.v3"
)

// TLSConfigServer returns a server configuration for mutual TLS: it serves
// kp and requires every client to present a certificate that verifies under
// clientCAs with the clientAuth usage.
func TLSConfigServer(kp *Keypair, clientCAs *x509.CertPool) (*tls.Config, error) {
	cert, err := kp.TLSCertificate()
	if err != nil {
		return nil, fmt.Errorf("TLS server config: %w", err)
	}
	if clientCAs == nil {
		return nil, errors.New("TLS server config: no client CA pool (mutual TLS needs one)")
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCAs,
	}, nil
}

// TLSConfigClient returns a client configuration that trusts only rootCAs,
// checks the server's certificate for serverName (a DNS name or an IP
// address) and presents kp as the client certificate. A nil kp dials
// without a client certificate.
func TLSConfigClient(kp *Keypair, rootCAs *x509.CertPool, serverName string) (*tls.Config, error) {
	if rootCAs == nil {
		return nil, errors.New("TLS client config: no root CA pool")
	}
	if serverName == "" {
		return nil, errors.New("TLS client config: empty server name")
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    rootCAs,
		ServerName: serverName,
	}
	if kp != nil {
		cert, err := kp.TLSCertificate()
		if err != nil {
			return nil, fmt.Errorf("TLS client config: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// kubeconfig is the subset of the client-go kubeconfig format we write.
type kubeconfig struct {
	APIVersion     string            `yaml:"apiVersion"`
	Kind           string            `yaml:"kind"`
	Clusters       []kubeconfigNamed `yaml:"clusters"`
	Users          []kubeconfigUser  `yaml:"users"`
	Contexts       []kubeconfigCtx   `yaml:"contexts"`
	CurrentContext string            `yaml:"current-context"`
	Preferences    struct{}          `yaml:"preferences"`
}

type kubeconfigNamed struct {
	Name    string            `yaml:"name"`
	Cluster kubeconfigCluster `yaml:"cluster"`
}

type kubeconfigCluster struct {
	CertificateAuthorityData string `yaml:"certificate-authority-data"`
	Server                   string `yaml:"server"`
}

type kubeconfigUser struct {
	Name string             `yaml:"name"`
	User kubeconfigUserAuth `yaml:"user"`
}

type kubeconfigUserAuth struct {
	ClientCertificateData string `yaml:"client-certificate-data"`
	ClientKeyData         string `yaml:"client-key-data"`
}

type kubeconfigCtx struct {
	Name    string            `yaml:"name"`
	Context kubeconfigContext `yaml:"context"`
}

type kubeconfigContext struct {
	Cluster string `yaml:"cluster"`
	User    string `yaml:"user"`
}

// KubeconfigClusterName is the name of the single cluster entry in the
// kubeconfigs Kubeconfig renders; the context is named after the user.
const KubeconfigClusterName = "local"

// Kubeconfig renders a kubeconfig (client-go's v1 Config) for user with
// the CA certificate and the client keypair embedded as base64 data, for
// the API server at server (an https:// URL). The result contains the
// private key: write it with mode 0600 (WriteFileAtomic).
func Kubeconfig(server string, ca *x509.Certificate, kp *Keypair, user string) ([]byte, error) {
	u, err := url.Parse(server)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig server %q: %w", server, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("kubeconfig server %q: want an https:// URL with a host", server)
	}
	if ca == nil {
		return nil, errors.New("kubeconfig: no CA certificate")
	}
	if kp == nil || len(kp.CertPEM) == 0 || len(kp.KeyPEM) == 0 {
		return nil, errors.New("kubeconfig: empty client keypair")
	}
	if strings.TrimSpace(user) == "" {
		return nil, errors.New("kubeconfig: empty user name")
	}
	b64 := base64.StdEncoding.EncodeToString
	cfg := kubeconfig{
		APIVersion: "v1",
		Kind:       "Config",
		Clusters: []kubeconfigNamed{{
			Name:    KubeconfigClusterName,
			Cluster: kubeconfigCluster{CertificateAuthorityData: b64(encodeCertPEM(ca)), Server: server},
		}},
		Users: []kubeconfigUser{{
			Name: user,
			User: kubeconfigUserAuth{ClientCertificateData: b64(kp.CertPEM), ClientKeyData: b64(kp.KeyPEM)},
		}},
		Contexts: []kubeconfigCtx{{
			Name:    user,
			Context: kubeconfigContext{Cluster: KubeconfigClusterName, User: user},
		}},
		CurrentContext: user,
	}
	out, err := yaml.Marshal(&cfg)
	if err != nil {
		return nil, fmt.Errorf("rendering kubeconfig: %w", err)
	}
	return out, nil
}
