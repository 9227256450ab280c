package pki

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kopsnode/agents/pkg/store"
)

func TestEnsureCACreatesThenReloadsSameCA(t *testing.T) {
	ks, s, clk := newKeystore(t)
	ctx := context.Background()
	ca := mustEnsureCA(t, ks, CAKubernetes, CAOptions{})

	c := ca.Cert()
	if !c.IsCA || !c.BasicConstraintsValid || !c.MaxPathLenZero {
		t.Errorf("CA cert: IsCA=%v BasicConstraintsValid=%v MaxPathLenZero=%v, want all true", c.IsCA, c.BasicConstraintsValid, c.MaxPathLenZero)
	}
	if c.Subject.CommonName != CAKubernetes {
		t.Errorf("CA CN = %q, want %q", c.Subject.CommonName, CAKubernetes)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA KeyUsage %b lacks CertSign", c.KeyUsage)
	}
	if pk, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pk.Curve != elliptic.P256() {
		t.Errorf("CA public key is %T, want ECDSA P-256", c.PublicKey)
	}
	if len(c.SubjectKeyId) == 0 {
		t.Error("CA has no SubjectKeyId")
	}
	if want := clk.Now().Add(DefaultCAValidity); !c.NotAfter.Equal(want.Truncate(time.Second)) {
		t.Errorf("CA NotAfter = %s, want %s", c.NotAfter, want)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("CA not self-signed: %v", err)
	}

	// Layout: <prefix>/<name>/ca.pem and ca.crt.
	for _, k := range []string{"test-cluster/pki/kubernetes-ca/ca.pem", "test-cluster/pki/kubernetes-ca/ca.crt"} {
		if _, err := s.Stat(ctx, k); err != nil {
			t.Errorf("stat %s: %v", k, err)
		}
	}
	// The file backend keeps the bundle with the CA key private to root.
	onDisk := filepath.Join(strings.TrimPrefix(s.URL(), "file://"), "test-cluster/pki/kubernetes-ca/ca.pem")
	if fi, err := os.Stat(onDisk); err != nil {
		t.Errorf("stored CA bundle: %v", err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Errorf("stored CA bundle %s has mode %o, want 0600", onDisk, fi.Mode().Perm())
	}
	crt, _, err := store.ReadAll(ctx, s, "test-cluster/pki/kubernetes-ca/ca.crt")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(crt, []byte("PRIVATE KEY")) {
		t.Error("ca.crt contains a private key")
	}

	again := mustEnsureCA(t, ks, CAKubernetes, CAOptions{KeyType: KeyRSA2048})
	if !again.Cert().Equal(c) {
		t.Error("second EnsureCA returned a different CA")
	}
	loaded, err := ks.LoadCA(ctx, CAKubernetes)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert().Equal(c) || !publicKeysEqual(loaded.key.Public(), ca.key.Public()) {
		t.Error("LoadCA returned a different CA")
	}
	certOnly, err := ks.LoadCACert(ctx, CAKubernetes)
	if err != nil {
		t.Fatal(err)
	}
	if !certOnly.Equal(c) {
		t.Error("LoadCACert returned a different certificate")
	}
	if got, want := ca.URL(), s.URL()+"/test-cluster/pki/kubernetes-ca/ca.pem"; got != want {
		t.Errorf("CA URL = %q, want %q", got, want)
	}
}

func TestEnsureCARSA(t *testing.T) {
	ks, _, _ := newKeystore(t)
	ca := mustEnsureCA(t, ks, CAEtcdClients, CAOptions{KeyType: KeyRSA2048, Validity: 48 * time.Hour, Organization: []string{"kopsnode"}})
	pk, ok := ca.Cert().PublicKey.(*rsa.PublicKey)
	if !ok || pk.N.BitLen() != 2048 {
		t.Fatalf("CA public key %T, want RSA 2048", ca.Cert().PublicKey)
	}
	if got := ca.Cert().Subject.Organization; len(got) != 1 || got[0] != "kopsnode" {
		t.Errorf("Organization = %v", got)
	}
	kp := mustIssue(t, ca, CertRequest{CommonName: "apiserver", Usage: UsageClient, KeyType: KeyRSA2048, Validity: time.Hour})
	if _, err := kp.Cert.Verify(x509.VerifyOptions{Roots: ca.CertPool(), CurrentTime: kp.Cert.NotBefore.Add(time.Minute), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("RSA leaf does not verify under RSA CA: %v", err)
	}
	if kp.Cert.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
		t.Error("RSA leaf lacks KeyEncipherment")
	}
}

// Eight nodes (each with its own store handle and keystore on the same
// directory) race to create the CA: exactly one CA results and all get it.
func TestEnsureCARaceCreatesExactlyOneCA(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		cas   = make([]*CA, n)
		errs  = make([]error, n)
	)
	clk := newFakeClock()
	for i := range n {
		s := newFileStore(t, dir)
		ks, err := NewKeystore(s, "race/pki", nil, clk.Now)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			cas[i], errs[i] = ks.EnsureCA(context.Background(), CAEtcdPeers("main"), CAOptions{})
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: EnsureCA: %v", i, err)
		}
	}
	for i := 1; i < n; i++ {
		if !cas[i].Cert().Equal(cas[0].Cert()) {
			t.Errorf("node %d got CA serial %s, node 0 got %s", i, cas[i].Cert().SerialNumber, cas[0].Cert().SerialNumber)
		}
		if !publicKeysEqual(cas[i].key.Public(), cas[0].key.Public()) {
			t.Errorf("node %d holds a different CA key", i)
		}
	}
	s := newFileStore(t, dir)
	infos, err := s.List(context.Background(), "race/pki/")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, in := range infos {
		keys = append(keys, in.Key)
	}
	want := []string{"race/pki/etcd-peers-ca-main/ca.crt", "race/pki/etcd-peers-ca-main/ca.pem"}
	if fmt.Sprint(keys) != fmt.Sprint(want) {
		t.Errorf("store holds %v, want %v", keys, want)
	}
	stored, err := NewKeystore(s, "race/pki", nil, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := stored.LoadCA(context.Background(), CAEtcdPeers("main"))
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert().Equal(cas[0].Cert()) {
		t.Error("stored CA differs from the one the racers returned")
	}
}

// A certificate from one CA must not verify under any other.
func TestCAIsolation(t *testing.T) {
	ks, _, clk := newKeystore(t)
	names := []string{CAKubernetes, CAEtcdPeers("main"), CAEtcdPeers("events"), CAEtcdClients, CAEtcdManager("main")}
	cas := map[string]*CA{}
	leaves := map[string]*Keypair{}
	for _, n := range names {
		cas[n] = mustEnsureCA(t, ks, n, CAOptions{})
		leaves[n] = mustIssue(t, cas[n], CertRequest{CommonName: "member-" + n, Usage: UsagePeer, DNSNames: []string{"node1.internal"}})
	}
	for _, leafCA := range names {
		for _, rootCA := range names {
			_, err := leaves[leafCA].Cert.Verify(x509.VerifyOptions{
				Roots:       cas[rootCA].CertPool(),
				CurrentTime: clk.Now(),
				KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
			})
			if leafCA == rootCA && err != nil {
				t.Errorf("leaf of %s does not verify under its own CA: %v", leafCA, err)
			}
			if leafCA != rootCA && err == nil {
				t.Errorf("leaf of %s verifies under %s", leafCA, rootCA)
			}
		}
	}
}

func TestLoadCAMissingIsNotFound(t *testing.T) {
	ks, s, _ := newKeystore(t)
	_, err := ks.LoadCA(context.Background(), CAKubernetes)
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("LoadCA of a missing CA: %v, want ErrNotFound", err)
	}
	if want := s.URL() + "/test-cluster/pki/kubernetes-ca/ca.pem"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name %s", err, want)
	}
	if _, err := ks.LoadCACert(context.Background(), CAKubernetes); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("LoadCACert of a missing CA: %v, want ErrNotFound", err)
	}
}

// A corrupt stored CA is an error naming the object's URL, from LoadCA,
// from EnsureCA (which must not overwrite it) and from CheckCAs.
func TestCorruptStoredCANamesURL(t *testing.T) {
	ks0, _, clk := newKeystore(t)
	good := mustEnsureCA(t, ks0, "good-ca", CAOptions{})
	other := mustEnsureCA(t, ks0, "other-ca", CAOptions{})
	goodKey, err := marshalKeyPEM(good.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf := mustIssue(t, good, CertRequest{CommonName: "x", Usage: UsageClient})
	cases := []struct {
		name    string
		content []byte
		want    string
	}{
		{"garbage", []byte("this is not PEM at all\x00\xff"), "no PEM blocks"},
		{"empty", nil, "no PEM blocks"},
		{"truncated PEM", good.certPEM[:len(good.certPEM)/2], "no PEM blocks"},
		{"cert only", good.certPEM, "no private key block"},
		{"key only", goodKey, "no CERTIFICATE block"},
		{"key of another CA", append(good.CertPEM(), mustKeyPEM(t, other.key)...), "does not match"},
		{"leaf not CA", append(append([]byte(nil), leaf.CertPEM...), leaf.KeyPEM...), "not a CA certificate"},
		{"corrupt DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 1, 2, 3}}), "parsing certificate"},
		{"unexpected block", append(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}}), good.certPEM...), `unexpected PEM block "PUBLIC KEY"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newFileStore(t, "")
			ks, err := NewKeystore(s, "c1/pki", nil, clk.Now)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			key := "c1/pki/kubernetes-ca/ca.pem"
			if _, err := s.Put(ctx, key, bytes.NewReader(tc.content), store.Condition{}); err != nil {
				t.Fatal(err)
			}
			url := s.URL() + "/" + key
			check := func(what string, err error) {
				t.Helper()
				if err == nil {
					t.Fatalf("%s of a corrupt CA succeeded", what)
				}
				if !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s error %q: want it to name %s and say %q", what, err, url, tc.want)
				}
				if bytes.Contains([]byte(err.Error()), []byte("PRIVATE KEY")) {
					t.Errorf("%s error contains key material: %q", what, err)
				}
			}
			_, err = ks.LoadCA(ctx, CAKubernetes)
			check("LoadCA", err)
			_, err = ks.EnsureCA(ctx, CAKubernetes, CAOptions{})
			check("EnsureCA", err)
			after, _, err := store.ReadAll(ctx, s, key)
			if err != nil || !bytes.Equal(after, tc.content) {
				t.Errorf("EnsureCA changed the corrupt object (err %v)", err)
			}
			st, err := ks.CheckCAs(ctx)
			check("CheckCAs", err)
			if len(st) != 1 || st[0].Error == "" || st[0].Name != CAKubernetes {
				t.Errorf("CheckCAs statuses %+v, want one with Error set", st)
			}
		})
	}
}

func mustKeyPEM(t *testing.T, k *PrivateKey) []byte {
	t.Helper()
	b, err := marshalKeyPEM(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ca.crt is healed when missing and a stale one is reported, not trusted.
func TestEnsureCAPublishedCertificate(t *testing.T) {
	ks, s, _ := newKeystore(t)
	ctx := context.Background()
	ca := mustEnsureCA(t, ks, CAKubernetes, CAOptions{})
	crtKey := "test-cluster/pki/kubernetes-ca/ca.crt"

	if err := s.Delete(ctx, crtKey); err != nil {
		t.Fatal(err)
	}
	mustEnsureCA(t, ks, CAKubernetes, CAOptions{})
	got, err := ks.LoadCACert(ctx, CAKubernetes)
	if err != nil {
		t.Fatalf("ca.crt not healed: %v", err)
	}
	if !got.Equal(ca.Cert()) {
		t.Fatal("healed ca.crt differs from the CA")
	}

	other := mustEnsureCA(t, ks, "other-ca", CAOptions{})
	if _, err := s.Put(ctx, crtKey, bytes.NewReader(other.CertPEM()), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	_, err = ks.EnsureCA(ctx, CAKubernetes, CAOptions{})
	if err == nil || !strings.Contains(err.Error(), s.URL()+"/"+crtKey) || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("EnsureCA with a stale ca.crt: %v, want an error naming %s", err, crtKey)
	}
}

func TestCANameValidation(t *testing.T) {
	ks, _, _ := newKeystore(t)
	for _, name := range []string{"", "../etc", "a/b", "Upper", "-lead", "trail-", strings.Repeat("a", 64), "sp ace"} {
		if _, err := ks.EnsureCA(context.Background(), name, CAOptions{}); err == nil {
			t.Errorf("EnsureCA(%q) succeeded, want a name error", name)
		}
	}
	for _, name := range []string{CAKubernetes, CAEtcdClients, CAEtcdPeers("main"), CAEtcdPeers("events"), CAEtcdManager("main")} {
		if err := ValidateCAName(name); err != nil {
			t.Errorf("ValidateCAName(%q): %v", name, err)
		}
	}
}

func TestCAOptionsValidation(t *testing.T) {
	ks, _, _ := newKeystore(t)
	cases := []struct {
		opts CAOptions
		want string
	}{
		{CAOptions{KeyType: "dsa-1024"}, "keyType"},
		{CAOptions{Validity: -time.Hour}, "validity"},
		{CAOptions{Validity: time.Minute}, "validity"},
	}
	for _, tc := range cases {
		_, err := ks.EnsureCA(context.Background(), "bad-opts", tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("EnsureCA with %+v: %v, want error about %s", tc.opts, err, tc.want)
		}
	}
	if names, err := ks.ListCAs(context.Background()); err != nil || len(names) != 0 {
		t.Errorf("after failed creations ListCAs = %v, %v; want none", names, err)
	}
}

func TestNewKeystoreRejectsBadInput(t *testing.T) {
	if _, err := NewKeystore(nil, "c/pki", nil, nil); err == nil {
		t.Error("NewKeystore(nil store) succeeded")
	}
	s := newFileStore(t, "")
	if _, err := NewKeystore(s, "c/../pki", nil, nil); err == nil || !strings.Contains(err.Error(), s.URL()) {
		t.Errorf("NewKeystore with a '..' prefix: %v, want an error naming the store", err)
	}
}

func TestCheckCAsReportsNearExpiry(t *testing.T) {
	ks, _, clk := newKeystore(t)
	ctx := context.Background()
	var logs syncBuffer
	ks.logger = slogText(&logs)
	mustEnsureCA(t, ks, CAKubernetes, CAOptions{Validity: 300 * 24 * time.Hour})
	mustEnsureCA(t, ks, CAEtcdClients, CAOptions{Validity: 30 * 24 * time.Hour})

	byName := func(st []CAStatus) map[string]CAStatus {
		m := map[string]CAStatus{}
		for _, s := range st {
			m[s.Name] = s
		}
		return m
	}
	st, err := ks.CheckCAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := byName(st)
	if len(m) != 2 || m[CAKubernetes].NeedsRotation || m[CAEtcdClients].NeedsRotation {
		t.Fatalf("fresh CAs: %+v, want two not needing rotation", st)
	}

	// 25 days on, etcd-clients-ca (30 d) has 5 d of 30 d left: below 1/3.
	clk.Advance(25 * 24 * time.Hour)
	m = byName(mustCheck(t, ks))
	if !m[CAEtcdClients].NeedsRotation || m[CAEtcdClients].Expired {
		t.Errorf("etcd-clients-ca after 25d: %+v, want NeedsRotation and not expired", m[CAEtcdClients])
	}
	if got, want := m[CAEtcdClients].Remaining, 5*24*time.Hour; got != want {
		t.Errorf("etcd-clients-ca remaining %s, want %s", got, want)
	}
	if m[CAKubernetes].NeedsRotation {
		t.Errorf("kubernetes-ca after 25d of 300d needs rotation: %+v", m[CAKubernetes])
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "ca="+CAEtcdClients) {
		t.Errorf("no warning logged for etcd-clients-ca:\n%s", logs.String())
	}

	clk.Advance(6 * 24 * time.Hour)
	m = byName(mustCheck(t, ks))
	if !m[CAEtcdClients].Expired || !m[CAEtcdClients].NeedsRotation {
		t.Errorf("etcd-clients-ca after 31d: %+v, want Expired", m[CAEtcdClients])
	}
	if !strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("no error logged for the expired CA:\n%s", logs.String())
	}
}

func mustCheck(t *testing.T, ks *Keystore) []CAStatus {
	t.Helper()
	st, err := ks.CheckCAs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}
