package nodecheck

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kopsnode/agents/nodeup/kuberender"
)

// memFiles is a node's files by absolute path.
type memFiles map[string][]byte

func (m memFiles) ReadFile(p string) ([]byte, error) {
	b, ok := m[p]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
	}
	return b, nil
}

// fakeResolver resolves the names it holds and nothing else.
type fakeResolver map[string][]string

func (r fakeResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	if a, ok := r[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// fakeUnits holds unit states; a unit it does not hold fails to read.
type fakeUnits map[string]UnitState

func (f fakeUnits) UnitState(_ context.Context, unit string) (UnitState, error) {
	if s, ok := f[unit]; ok {
		return s, nil
	}
	return UnitState{}, fmt.Errorf("reading the state of %s over D-Bus: connection refused", unit)
}

var testPaths = Paths{
	KubeletKubeconfig:   "/var/lib/kubelet/kubeconfig",
	BootstrapKubeconfig: "/var/lib/kubelet/bootstrap-kubeconfig",
	CAFile:              "/var/lib/kubelet/ca.crt",
}

// kubeletCertPath is where the kubelet keeps the certificate its CSR got.
const kubeletCertPath = "/var/lib/kubelet/pki/kubelet-client-current.pem"

func TestCheckUnits(t *testing.T) {
	since := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	r := fakeUnits{
		"containerd.service": {LoadState: "loaded", ActiveState: "active", SubState: "running", Result: "success", Since: since},
		"kubelet.service":    {LoadState: "loaded", ActiveState: "activating", SubState: "auto-restart", Result: "exit-code", Since: since},
	}
	got := CheckUnits(context.Background(), r, []string{"containerd.service", "kubelet.service", "kube-proxy.service"}, time.Second)
	want := []Unit{
		{Name: "containerd.service", LoadState: "loaded", ActiveState: "active", SubState: "running", Result: "success", Since: since},
		{Name: "kubelet.service", LoadState: "loaded", ActiveState: "activating", SubState: "auto-restart", Result: "exit-code", Since: since},
		{Name: "kube-proxy.service", Unknown: "reading the state of kube-proxy.service over D-Bus: connection refused"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	if u := CheckUnits(context.Background(), nil, []string{"kubelet.service"}, time.Second); u[0].Unknown == "" {
		t.Errorf("no reader: %+v, want unknown", u)
	}
}

func TestCSRState(t *testing.T) {
	cond := func(typ certv1.RequestConditionType, st corev1.ConditionStatus, reason string) certv1.CertificateSigningRequestCondition {
		return certv1.CertificateSigningRequestCondition{Type: typ, Status: st, Reason: reason, Message: reason + " message"}
	}
	for _, tc := range []struct {
		name    string
		conds   []certv1.CertificateSigningRequestCondition
		hasCert bool
		state   string
		reason  string
	}{
		{"new", nil, false, CSRPending, ""},
		{"approved", []certv1.CertificateSigningRequestCondition{cond(certv1.CertificateApproved, corev1.ConditionTrue, "AutoApproved")}, false, CSRApproved, "AutoApproved"},
		{"issued", []certv1.CertificateSigningRequestCondition{cond(certv1.CertificateApproved, corev1.ConditionTrue, "AutoApproved")}, true, CSRIssued, "AutoApproved"},
		{"denied", []certv1.CertificateSigningRequestCondition{cond(certv1.CertificateDenied, corev1.ConditionTrue, "NotOurs")}, false, CSRDenied, "NotOurs"},
		{"approved then failed", []certv1.CertificateSigningRequestCondition{
			cond(certv1.CertificateApproved, corev1.ConditionTrue, "AutoApproved"), cond(certv1.CertificateFailed, corev1.ConditionTrue, "SignerError")}, false, CSRFailed, "SignerError"},
		{"a False condition does not count", []certv1.CertificateSigningRequestCondition{cond(certv1.CertificateDenied, corev1.ConditionFalse, "x")}, false, CSRPending, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, reason, _ := CSRState(tc.conds, tc.hasCert)
			if st != tc.state || reason != tc.reason {
				t.Errorf("got %s/%s, want %s/%s", st, reason, tc.state, tc.reason)
			}
		})
	}
}

// testCA is a throwaway CA for tests that need no API server.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) issue(t *testing.T, cn string, notAfter time.Time) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn, Organization: []string{"system:nodes"}},
		NotBefore: notAfter.Add(-48 * time.Hour), NotAfter: notAfter, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// kubeletWrittenKubeconfig is the kubeconfig a kubelet writes once its CSR
// is issued: the certificate and key by reference, in one file.
func kubeletWrittenKubeconfig(t *testing.T, server string, ca []byte) []byte {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["default-cluster"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	kc.AuthInfos["default-auth"] = &clientcmdapi.AuthInfo{ClientCertificate: kubeletCertPath, ClientKey: kubeletCertPath}
	kc.Contexts["default-context"] = &clientcmdapi.Context{Cluster: "default-cluster", AuthInfo: "default-auth"}
	kc.CurrentContext = "default-context"
	b, err := clientcmd.Write(*kc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// renderedKubeconfig is a kubeconfig as nodeup renders it (bootstrap token
// on workers, embedded certificate on control-plane nodes).
func renderedKubeconfig(t *testing.T, server string, ca []byte, cred kuberender.Credentials) []byte {
	t.Helper()
	b, err := kuberender.Kubeconfig(kuberender.KubeconfigSpec{Server: server, CAPEM: ca, User: "kubelet", Credentials: cred})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCheckCertificate(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now()
	good, goodKey := ca.issue(t, "system:node:worker-1", now.Add(24*time.Hour))
	old, oldKey := ca.issue(t, "system:node:worker-1", now.Add(-time.Hour))

	load := func(files memFiles) Certificate {
		k, err := LoadKubeconfig(files, testPaths.KubeletKubeconfig)
		return CheckCertificate(k, err, testPaths.KubeletKubeconfig, now)
	}
	t.Run("not issued yet", func(t *testing.T) {
		c := load(memFiles{})
		if c.Issued || c.Error != "" {
			t.Errorf("%+v", c)
		}
	})
	t.Run("issued by CSR, in the kubelet's pki directory", func(t *testing.T) {
		c := load(memFiles{
			testPaths.KubeletKubeconfig: kubeletWrittenKubeconfig(t, "https://api", ca.pem),
			kubeletCertPath:             append(append([]byte{}, good...), goodKey...),
		})
		if !c.Issued || c.Path != kubeletCertPath || !strings.Contains(c.Subject, "CN=system:node:worker-1") || c.Expired || c.Error != "" {
			t.Errorf("%+v", c)
		}
		if c.NotAfter.Sub(now.Add(24*time.Hour)).Abs() > time.Second {
			t.Errorf("notAfter %s", c.NotAfter)
		}
	})
	t.Run("embedded by nodeup on a control-plane node", func(t *testing.T) {
		c := load(memFiles{testPaths.KubeletKubeconfig: renderedKubeconfig(t, "https://127.0.0.1", ca.pem, kuberender.Credentials{ClientCertPEM: good, ClientKeyPEM: goodKey})})
		if !c.Issued || c.Path != testPaths.KubeletKubeconfig || c.Error != "" {
			t.Errorf("%+v", c)
		}
	})
	t.Run("expired", func(t *testing.T) {
		c := load(memFiles{testPaths.KubeletKubeconfig: renderedKubeconfig(t, "https://api", ca.pem, kuberender.Credentials{ClientCertPEM: old, ClientKeyPEM: oldKey})})
		if !c.Issued || !c.Expired || !strings.Contains(c.Error, "expired") {
			t.Errorf("%+v", c)
		}
	})
	t.Run("certificate file missing", func(t *testing.T) {
		c := load(memFiles{testPaths.KubeletKubeconfig: kubeletWrittenKubeconfig(t, "https://api", ca.pem)})
		if c.Issued || !strings.Contains(c.Error, kubeletCertPath) || !strings.Contains(c.Error, "client-certificate") {
			t.Errorf("%+v", c)
		}
	})
	t.Run("unreadable kubeconfig", func(t *testing.T) {
		c := load(memFiles{testPaths.KubeletKubeconfig: []byte("{not yaml")})
		if c.Issued || !strings.Contains(c.Error, testPaths.KubeletKubeconfig) {
			t.Errorf("%+v", c)
		}
	})
}

func TestRunWithoutKubeconfigs(t *testing.T) {
	r := Run(context.Background(), Inputs{Files: memFiles{}, Resolver: fakeResolver{}, Paths: testPaths,
		Units: fakeUnits{}, UnitNames: []string{"kubelet.service"}})
	if r.API.Unknown == "" || !strings.Contains(r.API.Unknown, testPaths.BootstrapKubeconfig) {
		t.Errorf("api %+v", r.API)
	}
	if r.Certificate.Issued || !strings.Contains(r.Certificate.Unknown, "no bootstrap kubeconfig at "+testPaths.BootstrapKubeconfig) {
		t.Errorf("certificate %+v", r.Certificate)
	}
	if r.Node.Unknown == "" || len(r.Units) != 1 || r.Units[0].Unknown == "" {
		t.Errorf("%+v", r)
	}
}

func TestCheckAPIName(t *testing.T) {
	ca := newTestCA(t)
	ctx := context.Background()
	t.Run("does not resolve", func(t *testing.T) {
		a, conn := CheckAPI(ctx, fakeResolver{}, "https://api.internal.example.test", ca.pem, time.Second)
		if a.Resolves || a.Answers || conn != nil || !strings.Contains(a.Error, "resolving api.internal.example.test") || !strings.Contains(a.Error, "no such host") {
			t.Errorf("%+v", a)
		}
	})
	t.Run("resolver too slow", func(t *testing.T) {
		a, _ := CheckAPI(ctx, slowResolver{}, "https://api.internal.example.test", ca.pem, 100*time.Millisecond)
		if a.Resolves || !strings.Contains(a.Error, "deadline") {
			t.Errorf("%+v", a)
		}
	})
	t.Run("not an https URL", func(t *testing.T) {
		a, _ := CheckAPI(ctx, fakeResolver{}, "api.internal:443", ca.pem, time.Second)
		if a.Resolves || !strings.Contains(a.Error, "not an https:// URL") {
			t.Errorf("%+v", a)
		}
	})
	t.Run("nothing listens", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		_, port, _ := net.SplitHostPort(addr)
		a, _ := CheckAPI(ctx, fakeResolver{"api.internal": {"127.0.0.1"}}, "https://api.internal:"+port, ca.pem, time.Second)
		if !a.Resolves || a.Answers || !strings.Contains(a.Error, "connection refused") {
			t.Errorf("%+v", a)
		}
	})
}

// slowResolver answers only when its context ends.
type slowResolver struct{}

func (slowResolver) LookupHost(ctx context.Context, _ string) ([]string, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestReadyzSummary(t *testing.T) {
	body := "[+]ping ok\n[-]etcd failed: reason withheld\n[+]log ok\nreadyz check failed\n"
	if got := readyzSummary("500 Internal Server Error", []byte(body)); got != "500 Internal Server Error: [-]etcd failed: reason withheld" {
		t.Errorf("got %q", got)
	}
	if got := readyzSummary("200 OK", []byte("ok")); got != "200 OK: ok" {
		t.Errorf("got %q", got)
	}
}
