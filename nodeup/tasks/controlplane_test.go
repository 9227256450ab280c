package tasks

import (
	"context"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kopsnode/agents/nodeup/internal/nodeuptest"
	"github.com/kopsnode/agents/pkg/pki"
)

func cpKeystore(t *testing.T) *pki.Keystore {
	t.Helper()
	s, _ := nodeuptest.Store(t)
	ks, err := pki.NewKeystore(s, "c/pki", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func TestCertificateIssuedKeptAndReissued(t *testing.T) {
	ctx := context.Background()
	ks := cpKeystore(t)
	root := t.TempDir()
	e, _ := env(t, root)
	now := time.Now()
	task := &Certificate{
		CertPath: "/etc/kubernetes/pki/apiserver.crt", KeyPath: "/etc/kubernetes/pki/apiserver.key", CA: pki.CAKubernetes,
		Request: pki.CertRequest{CommonName: "kube-apiserver", Usage: pki.UsageServer,
			DNSNames: []string{"kubernetes", "api.internal.c"}, IPs: []net.IP{net.ParseIP("100.64.0.1"), net.ParseIP("127.0.0.1")}},
		Keystore: ks, Now: func() time.Time { return now },
	}
	if d := converge(t, e, task); d == nil {
		t.Fatal("nothing issued on an empty root")
	}
	certPEM, _ := os.ReadFile(filepath.Join(root, task.CertPath))
	keyInfo, _ := os.Stat(filepath.Join(root, task.KeyPath))
	if keyInfo == nil || keyInfo.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", keyInfo)
	}
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ks.LoadCA(ctx, pki.CAKubernetes)
	if err != nil {
		t.Fatalf("the first control-plane node did not create the CA: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.CertPool(), DNSName: "api.internal.c", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("serving certificate does not verify for the API name: %v", err)
	}
	// A re-run keeps it.
	if d := converge(t, e, task); d != nil {
		t.Fatalf("a converged pair was reissued: %v", d)
	}
	// A changed SAN set, a key that does not match, rotation time: reissued.
	task.Request.DNSNames = append(task.Request.DNSNames, "kubernetes.default")
	if d := converge(t, e, task); d == nil || d.(*PKIDiff).Reason == "" {
		t.Fatal("a new SAN did not reissue")
	}
	other := &Certificate{CertPath: "/x.crt", KeyPath: task.KeyPath, CA: pki.CAKubernetes, Request: pki.CertRequest{CommonName: "x", Usage: pki.UsageClient}, Keystore: ks}
	if err := other.Apply(ctx, e, nil); err != nil {
		t.Fatal(err)
	}
	if d, _ := task.Find(ctx, e); d == nil || d.(*PKIDiff).Reason != "unreadable, or the key does not match the certificate" {
		t.Fatalf("mismatched key: diff %v", d)
	}
	converge(t, e, task)
	now = now.Add(300 * 24 * time.Hour)
	if d, _ := task.Find(ctx, e); d == nil || d.(*PKIDiff).Reason != "certificate due for rotation" {
		t.Fatalf("after 300 days: diff %v", d)
	}
}

func TestCAFilesAndSigningKeyFilesAreTheStoreCopies(t *testing.T) {
	ctx := context.Background()
	ks := cpKeystore(t)
	// Two control-plane nodes: both write the one CA and the one key.
	var roots []string
	for range 2 {
		root := t.TempDir()
		roots = append(roots, root)
		e, _ := env(t, root)
		ca := &CAFiles{CA: pki.CAKubernetes, CertPath: "/etc/kubernetes/pki/ca.crt", KeyPath: "/etc/kubernetes/pki/ca.key", Keystore: ks}
		fp := &CAFiles{CA: pki.CAFrontProxy, CertPath: "/etc/kubernetes/pki/front-proxy-ca.crt", Keystore: ks}
		sa := &SigningKeyFiles{Name: pki.SigningKeyServiceAccount, KeyPath: "/etc/kubernetes/pki/sa.key", PubPath: "/etc/kubernetes/pki/sa.pub", Keystore: ks}
		if d := converge(t, e, ca); d == nil {
			t.Fatal("CA files not written")
		}
		converge(t, e, fp)
		converge(t, e, sa)
		if fi, err := os.Stat(filepath.Join(root, "etc/kubernetes/pki/ca.key")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("ca.key: %v %v", fi, err)
		}
		if fi, err := os.Stat(filepath.Join(root, "etc/kubernetes/pki/sa.key")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("sa.key: %v %v", fi, err)
		}
		if _, err := os.Stat(filepath.Join(root, "etc/kubernetes/pki/front-proxy-ca.key")); err == nil {
			t.Fatal("the front-proxy CA key was written without KeyPath")
		}
	}
	for _, f := range []string{"ca.crt", "ca.key", "front-proxy-ca.crt", "sa.key", "sa.pub"} {
		a, _ := os.ReadFile(filepath.Join(roots[0], "etc/kubernetes/pki", f))
		b, _ := os.ReadFile(filepath.Join(roots[1], "etc/kubernetes/pki", f))
		if len(a) == 0 || string(a) != string(b) {
			t.Errorf("%s differs between two control-plane nodes", f)
		}
	}
	ca, err := ks.LoadCA(ctx, pki.CAKubernetes)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := os.ReadFile(filepath.Join(roots[0], "etc/kubernetes/pki/ca.key"))
	if _, err := pki.ParseKeypairPEM(ca.CertPEM(), keyPEM); err != nil {
		t.Fatalf("ca.key is not the store CA's key: %v", err)
	}
	// A file changed by hand is put back.
	p := filepath.Join(roots[0], "etc/kubernetes/pki/sa.pub")
	if err := os.WriteFile(p, []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	e, _ := env(t, roots[0])
	sa := &SigningKeyFiles{Name: pki.SigningKeyServiceAccount, KeyPath: "/etc/kubernetes/pki/sa.key", PubPath: "/etc/kubernetes/pki/sa.pub", Keystore: ks}
	if d := converge(t, e, sa); d == nil {
		t.Fatal("tampered sa.pub not detected")
	}
}
