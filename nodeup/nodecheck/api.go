package nodecheck

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Kubeconfig is what a kubeconfig's current context holds, with every
// file it references read through the node's FileReader.
type Kubeconfig struct {
	// Path is the kubeconfig's own path.
	Path   string
	Server string
	CAPEM  []byte
	// CertPEM and KeyPEM are the client certificate and key; CertPath is
	// the file the certificate came from ("" when embedded).
	CertPEM, KeyPEM []byte
	CertPath        string
	Token           string
}

// LoadKubeconfig reads a kubeconfig and the files it references (the
// kubelet writes its kubeconfig with client-certificate pointing at
// /var/lib/kubelet/pki/kubelet-client-current.pem). A missing kubeconfig
// returns an error that wraps fs.ErrNotExist.
func LoadKubeconfig(files FileReader, p string) (*Kubeconfig, error) {
	if p == "" {
		return nil, fmt.Errorf("no kubeconfig path: %w", fs.ErrNotExist)
	}
	b, err := files.ReadFile(p)
	if err != nil {
		return nil, err
	}
	cfg, err := clientcmd.Load(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	kctx, ok := cfg.Contexts[cfg.CurrentContext]
	if !ok {
		return nil, fmt.Errorf("%s: current-context %q not found", p, cfg.CurrentContext)
	}
	cl, ok := cfg.Clusters[kctx.Cluster]
	if !ok {
		return nil, fmt.Errorf("%s: cluster %q of context %q not found", p, kctx.Cluster, cfg.CurrentContext)
	}
	au, ok := cfg.AuthInfos[kctx.AuthInfo]
	if !ok {
		return nil, fmt.Errorf("%s: user %q of context %q not found", p, kctx.AuthInfo, cfg.CurrentContext)
	}
	k := &Kubeconfig{Path: p, Server: cl.Server, CAPEM: cl.CertificateAuthorityData,
		CertPEM: au.ClientCertificateData, KeyPEM: au.ClientKeyData, Token: au.Token}
	// Relative references are relative to the kubeconfig's directory, as
	// client-go resolves them.
	ref := func(field, f string) ([]byte, string, error) {
		if !path.IsAbs(f) {
			f = path.Join(path.Dir(p), f)
		}
		b, err := files.ReadFile(f)
		if err != nil {
			// Not %w: a missing referenced file is an error, whereas a
			// missing kubeconfig means "not there yet".
			return nil, f, fmt.Errorf("%s: %s: %v", p, field, err)
		}
		return b, f, nil
	}
	if len(k.CAPEM) == 0 && cl.CertificateAuthority != "" {
		if k.CAPEM, _, err = ref("clusters."+kctx.Cluster+".certificate-authority", cl.CertificateAuthority); err != nil {
			return nil, err
		}
	}
	if len(k.CertPEM) == 0 && au.ClientCertificate != "" {
		if k.CertPEM, k.CertPath, err = ref("users."+kctx.AuthInfo+".client-certificate", au.ClientCertificate); err != nil {
			return nil, err
		}
	}
	if len(k.KeyPEM) == 0 && au.ClientKey != "" {
		if k.KeyPEM, _, err = ref("users."+kctx.AuthInfo+".client-key", au.ClientKey); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// Conn reaches the API server through the addresses its name resolved to
// (so that every API read goes where the check looked) and verifies it
// with the cluster CA.
type Conn struct {
	Server  string
	Host    string
	Addrs   []string
	CAPEM   []byte
	Timeout time.Duration
}

func (c *Conn) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	var errs []error
	for _, a := range c.Addrs {
		conn, err := d.DialContext(ctx, network, net.JoinHostPort(a, port))
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("%s resolved to no address", c.Host)
	}
	return nil, errors.Join(errs...)
}

// restConfig is the client configuration for a kubeconfig's credentials.
func (c *Conn) restConfig(k *Kubeconfig) *rest.Config {
	return &rest.Config{
		Host:            c.Server,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.CAPEM, CertData: k.CertPEM, KeyData: k.KeyPEM},
		BearerToken:     k.Token,
		Dial:            c.dial,
		Timeout:         c.Timeout,
		UserAgent:       "nodeup-status",
	}
}

// Client returns a client-go clientset with a kubeconfig's credentials.
func (c *Conn) Client(k *Kubeconfig) (kubernetes.Interface, error) {
	cs, err := kubernetes.NewForConfig(c.restConfig(k))
	if err != nil {
		return nil, fmt.Errorf("client for %s with %s: %w", c.Server, k.Path, err)
	}
	return cs, nil
}

// CheckAPI resolves the API server's name and sends it GET /readyz,
// anonymously, over TLS verified with caPEM. The Conn it returns reaches
// the server for further reads; it is nil when the name did not resolve.
func CheckAPI(ctx context.Context, res Resolver, server string, caPEM []byte, timeout time.Duration) (API, *Conn) {
	a := API{Server: server}
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" {
		a.Error = fmt.Sprintf("server %q is not an https:// URL", server)
		return a, nil
	}
	a.Host = u.Hostname()
	if ip, err := netip.ParseAddr(a.Host); err == nil {
		a.Resolves, a.Addresses = true, []string{ip.String()}
	} else if res == nil {
		a.Unknown = "no resolver"
		return a, nil
	} else {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		addrs, err := res.LookupHost(rctx, a.Host)
		cancel()
		if err != nil {
			a.Error = fmt.Sprintf("resolving %s: %v", a.Host, err)
			return a, nil
		}
		if len(addrs) == 0 {
			a.Error = fmt.Sprintf("resolving %s: no addresses", a.Host)
			return a, nil
		}
		a.Resolves, a.Addresses = true, addrs
	}
	c := &Conn{Server: strings.TrimSuffix(server, "/"), Host: a.Host, Addrs: a.Addresses, CAPEM: caPEM, Timeout: timeout}
	pool := x509.NewCertPool()
	if len(caPEM) == 0 || !pool.AppendCertsFromPEM(caPEM) {
		a.Error = "no cluster CA certificate on the node to verify the API server with"
		return a, c
	}
	tr := &http.Transport{
		DialContext:     c.dial,
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: a.Host, MinVersion: tls.VersionTLS12},
	}
	defer tr.CloseIdleConnections()
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(hctx, http.MethodGet, c.Server+"/readyz", nil)
	if err != nil {
		a.Error = fmt.Sprintf("GET %s/readyz: %v", c.Server, err)
		return a, c
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		a.Error = fmt.Sprintf("GET %s/readyz: %v", c.Server, err)
		return a, c
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	a.Answers = true
	a.Readyz = readyzSummary(resp.Status, body)
	a.Ready = resp.StatusCode == http.StatusOK
	if !a.Ready {
		a.Error = fmt.Sprintf("GET %s/readyz: %s", c.Server, a.Readyz)
	}
	return a, c
}

// readyzSummary is the status and the failing checks of a /readyz body
// (its lines starting "[-]"), or its first line.
func readyzSummary(status string, body []byte) string {
	var failing []string
	lines := strings.Split(strings.TrimSpace(string(body)), "\n")
	for _, l := range lines {
		if strings.HasPrefix(l, "[-]") {
			failing = append(failing, strings.TrimSpace(l))
		}
	}
	s := status
	switch {
	case len(failing) > 0:
		s += ": " + strings.Join(failing, "; ")
	case lines[0] != "":
		s += ": " + strings.TrimSpace(lines[0])
	}
	return s
}
