package kuberender

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kopsnode/agents/pkg/pki"
	"github.com/kopsnode/agents/pkg/store/file"
)

// TestKubeconfigCredentialsWorkWithClientGo: client-go, reading our
// kubeconfigs, trusts exactly the embedded CA and presents the embedded
// client certificate (mutual TLS) or bearer token to a server.
func TestKubeconfigCredentialsWorkWithClientGo(t *testing.T) {
	s, err := file.New(t.TempDir(), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ks, err := pki.NewKeystore(s, "c/pki", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ks.EnsureCA(context.Background(), pki.CAKubernetes, pki.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	serving, err := ca.Issue(pki.CertRequest{CommonName: "kube-apiserver", Usage: pki.UsageServer, IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Issue(pki.CertRequest{CommonName: "system:node:n1", Organization: []string{"system:nodes"}, Usage: pki.UsageClient})
	if err != nil {
		t.Fatal(err)
	}
	scfg, err := pki.TLSConfigServer(serving, ca.CertPool())
	if err != nil {
		t.Fatal(err)
	}
	// Client certificates are optional here so that the token case can
	// connect; any presented one is verified against the CA.
	scfg.ClientAuth = tls.VerifyClientCertIfGiven
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who := "anonymous"
		if pc := r.TLS.PeerCertificates; len(pc) > 0 {
			who = "cert:" + pc[0].Subject.CommonName
		} else if h := r.Header.Get("Authorization"); h != "" {
			who = h
		}
		io.WriteString(w, who)
	}))
	srv.TLS = scfg
	srv.StartTLS()
	defer srv.Close()

	for _, c := range []struct {
		creds Credentials
		want  string
	}{
		{Credentials{ClientCertPEM: client.CertPEM, ClientKeyPEM: []byte(client.KeyPEM)}, "cert:system:node:n1"},
		{Credentials{Token: "abcdef.0123456789abcdef"}, "Bearer abcdef.0123456789abcdef"},
	} {
		b, err := Kubeconfig(KubeconfigSpec{Server: srv.URL, CAPEM: ca.CertPEM(), User: "u", Credentials: c.creds})
		if err != nil {
			t.Fatal(err)
		}
		rc, err := clientcmd.RESTConfigFromKubeConfig(b)
		if err != nil {
			t.Fatal(err)
		}
		rc.Timeout = 10 * time.Second
		hc, err := rest.HTTPClientFor(rc)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Get(srv.URL)
		if err != nil {
			t.Fatalf("%s: %v", c.want, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != c.want {
			t.Errorf("server saw %q, want %q", body, c.want)
		}
		hc.CloseIdleConnections()
	}

	// Another CA's kubeconfig does not trust the server.
	other, err := ks.EnsureCA(context.Background(), "other-ca", pki.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Kubeconfig(KubeconfigSpec{Server: srv.URL, CAPEM: other.CertPEM(), User: "u", Credentials: Credentials{Token: "t"}})
	rc, _ := clientcmd.RESTConfigFromKubeConfig(b)
	hc, _ := rest.HTTPClientFor(rc)
	if resp, err := hc.Get(srv.URL); err == nil {
		resp.Body.Close()
		t.Error("a kubeconfig with another CA trusted the server")
	}
	hc.CloseIdleConnections()
}
