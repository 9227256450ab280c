package pki

import (
	"bytes"
	"crypto/x509"
	"math/big"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// Each usage gets the right key usages and verifies for exactly the TLS
// roles it is meant for.
func TestIssueUsagesAndSANs(t *testing.T) {
	ks, _, clk := newKeystore(t)
	ca := mustEnsureCA(t, ks, CAKubernetes, CAOptions{})
	cases := []struct {
		name       string
		req        CertRequest
		wantEKU    []x509.ExtKeyUsage
		serverAuth bool
		clientAuth bool
	}{
		{
			name: "server",
			req: CertRequest{CommonName: "kube-apiserver", Usage: UsageServer,
				DNSNames: []string{"api.internal.example.com", "kubernetes.default.svc"},
				IPs:      []net.IP{net.ParseIP("10.0.0.1"), net.ParseIP("fd00::1")}},
			wantEKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, serverAuth: true,
		},
		{
			name:    "client",
			req:     CertRequest{CommonName: "system:node:node1", Organization: []string{"system:nodes"}, Usage: UsageClient},
			wantEKU: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, clientAuth: true,
		},
		{
			name:    "peer",
			req:     CertRequest{CommonName: "etcd-a", Usage: UsagePeer, DNSNames: []string{"etcd-a.internal.example.com"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}},
			wantEKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, serverAuth: true, clientAuth: true,
		},
		{
			name:    "wildcard server",
			req:     CertRequest{CommonName: "ingress", Usage: UsageServer, DNSNames: []string{"*.apps.example.com"}},
			wantEKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, serverAuth: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kp := mustIssue(t, ca, tc.req)
			c := kp.Cert
			if c.Subject.CommonName != tc.req.CommonName || !slices.Equal(c.Subject.Organization, tc.req.Organization) {
				t.Errorf("subject %v, want CN=%s O=%v", c.Subject, tc.req.CommonName, tc.req.Organization)
			}
			if !slices.Equal(c.ExtKeyUsage, tc.wantEKU) {
				t.Errorf("ExtKeyUsage %v, want %v", c.ExtKeyUsage, tc.wantEKU)
			}
			if c.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("KeyUsage %b, want DigitalSignature only (ECDSA)", c.KeyUsage)
			}
			if c.IsCA {
				t.Error("leaf is a CA")
			}
			if !slices.Equal(c.DNSNames, tc.req.DNSNames) {
				t.Errorf("DNSNames %v, want %v", c.DNSNames, tc.req.DNSNames)
			}
			if len(c.IPAddresses) != len(tc.req.IPs) {
				t.Errorf("IPAddresses %v, want %v", c.IPAddresses, tc.req.IPs)
			}
			for i := range tc.req.IPs {
				if i < len(c.IPAddresses) && !c.IPAddresses[i].Equal(tc.req.IPs[i]) {
					t.Errorf("IPAddresses[%d] = %v, want %v", i, c.IPAddresses[i], tc.req.IPs[i])
				}
			}
			if !bytes.Equal(c.AuthorityKeyId, ca.Cert().SubjectKeyId) {
				t.Errorf("AKI %x, want CA SKI %x", c.AuthorityKeyId, ca.Cert().SubjectKeyId)
			}
			if len(c.SubjectKeyId) != 20 {
				t.Errorf("SKI %x, want 20 bytes", c.SubjectKeyId)
			}
			if want := clk.Now().Add(-Backdate); !c.NotBefore.Equal(want) {
				t.Errorf("NotBefore %s, want %s (backdated)", c.NotBefore, want)
			}
			if want := clk.Now().Add(DefaultLeafValidity); !c.NotAfter.Equal(want) {
				t.Errorf("NotAfter %s, want %s", c.NotAfter, want)
			}

			verify := func(eku x509.ExtKeyUsage, dns string) error {
				_, err := c.Verify(x509.VerifyOptions{Roots: ca.CertPool(), CurrentTime: clk.Now(), KeyUsages: []x509.ExtKeyUsage{eku}, DNSName: dns})
				return err
			}
			if err := verify(x509.ExtKeyUsageServerAuth, ""); (err == nil) != tc.serverAuth {
				t.Errorf("verify for serverAuth: err=%v, want success=%v", err, tc.serverAuth)
			}
			if err := verify(x509.ExtKeyUsageClientAuth, ""); (err == nil) != tc.clientAuth {
				t.Errorf("verify for clientAuth: err=%v, want success=%v", err, tc.clientAuth)
			}
			if tc.serverAuth {
				for _, n := range tc.req.DNSNames {
					host := strings.Replace(n, "*", "web", 1)
					if err := verify(x509.ExtKeyUsageServerAuth, host); err != nil {
						t.Errorf("verify for host %s: %v", host, err)
					}
				}
				for _, ip := range tc.req.IPs {
					if err := c.VerifyHostname(ip.String()); err != nil {
						t.Errorf("VerifyHostname(%s): %v", ip, err)
					}
				}
				if err := c.VerifyHostname("not-in-sans.example.org"); err == nil {
					t.Error("VerifyHostname accepted a name not in the SANs")
				}
			}
			// The stored PEM round-trips to the same keypair.
			back, err := ParseKeypairPEM(kp.CertPEM, kp.KeyPEM)
			if err != nil {
				t.Fatalf("ParseKeypairPEM: %v", err)
			}
			if !back.Cert.Equal(c) || !publicKeysEqual(back.Key.Public(), kp.Key.Public()) {
				t.Error("ParseKeypairPEM round trip differs")
			}
		})
	}
}

func TestIssueSerialsAreRandom128Bit(t *testing.T) {
	ks, _, _ := newKeystore(t)
	ca := mustEnsureCA(t, ks, CAKubernetes, CAOptions{})
	seen := map[string]bool{}
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	maxBits := 0
	for range 32 {
		kp := mustIssue(t, ca, CertRequest{CommonName: "c", Usage: UsageClient})
		s := kp.Cert.SerialNumber
		if s.Sign() <= 0 || s.Cmp(limit) >= 0 {
			t.Fatalf("serial %s outside (0, 2^128)", s)
		}
		if seen[s.String()] {
			t.Fatalf("serial %s repeated", s)
		}
		seen[s.String()] = true
		maxBits = max(maxBits, s.BitLen())
	}
	// Of 32 random 128-bit serials the largest has fewer than 120 bits with
	// probability 2^-256: a counter or a short random would fail here.
	if maxBits < 120 {
		t.Errorf("largest of 32 serials has %d bits; serials are not 128-bit random", maxBits)
	}
}

func TestIssueRejectsBadRequests(t *testing.T) {
	ks, _, _ := newKeystore(t)
	ca := mustEnsureCA(t, ks, CAKubernetes, CAOptions{})
	long := strings.Repeat("a", 64)
	cases := []struct {
		name string
		req  CertRequest
		want []string
	}{
		{"empty CN", CertRequest{Usage: UsageClient}, []string{"commonName: must not be empty"}},
		{"blank CN", CertRequest{CommonName: "  ", Usage: UsageClient}, []string{"commonName"}},
		{"no usage", CertRequest{CommonName: "x"}, []string{"usage: must be set"}},
		{"unknown usage", CertRequest{CommonName: "x", Usage: Usage(9)}, []string{"usage: Usage(9)"}},
		{"server without SAN", CertRequest{CommonName: "x", Usage: UsageServer}, []string{"needs at least one DNS name or IP"}},
		{"peer without SAN", CertRequest{CommonName: "x", Usage: UsagePeer}, []string{"peer certificate needs"}},
		{"underscore", CertRequest{CommonName: "x", Usage: UsageServer, DNSNames: []string{"bad_name.example.com"}}, []string{`dnsNames[0]: "bad_name.example.com"`, "invalid character"}},
		{"empty label", CertRequest{CommonName: "x", Usage: UsageServer, DNSNames: []string{"ok.example.com", "a..b"}}, []string{"dnsNames[1]", "empty label"}},
		{"hyphen", CertRequest{CommonName: "x", Usage: UsageServer, DNSNames: []string{"-a.example.com"}}, []string{"hyphen"}},
		{"long label", CertRequest{CommonName: "x", Usage: UsageServer, DNSNames: []string{long + ".com"}}, []string{"longer than 63"}},
		{"IP as DNS name", CertRequest{CommonName: "x", Usage: UsageServer, DNSNames: []string{"10.0.0.1"}}, []string{"put it in IPs"}},
		{"empty DNS name", CertRequest{CommonName: "x", Usage: UsageServer, DNSNames: []string{""}}, []string{"empty name"}},
		{"wildcard inside", CertRequest{CommonName: "x", Usage: UsageServer, DNSNames: []string{"a.*.com"}}, []string{"invalid character"}},
		{"bad IP", CertRequest{CommonName: "x", Usage: UsageServer, IPs: []net.IP{{1, 2, 3}}}, []string{"ips[0]"}},
		{"negative validity", CertRequest{CommonName: "x", Usage: UsageClient, Validity: -time.Hour}, []string{"validity: -1h0m0s is negative"}},
		{"tiny validity", CertRequest{CommonName: "x", Usage: UsageClient, Validity: time.Second}, []string{"shorter than the minimum"}},
		{"bad key type", CertRequest{CommonName: "x", Usage: UsageClient, KeyType: "ed448"}, []string{"keyType"}},
		{"several problems", CertRequest{Usage: UsageServer, Validity: -1}, []string{"commonName", "dnsNames, ips", "validity"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kp, err := ca.Issue(tc.req)
			if err == nil {
				t.Fatalf("Issue succeeded: %v", kp)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// A validity reaching past the CA's expiry is clamped to it; an expired CA
// (or one with under a minute left) refuses to issue.
func TestIssueValidityAgainstCALife(t *testing.T) {
	ks, _, clk := newKeystore(t)
	var logs syncBuffer
	ks.logger = slogText(&logs)
	ca := mustEnsureCA(t, ks, CAKubernetes, CAOptions{Validity: 10 * 24 * time.Hour})

	kp := mustIssue(t, ca, CertRequest{CommonName: "c", Usage: UsageClient, Validity: 30 * 24 * time.Hour})
	if !kp.Cert.NotAfter.Equal(ca.Cert().NotAfter) {
		t.Errorf("NotAfter %s, want clamped to the CA's %s", kp.Cert.NotAfter, ca.Cert().NotAfter)
	}
	if !strings.Contains(logs.String(), "clamping certificate validity") {
		t.Errorf("clamping not logged:\n%s", logs.String())
	}
	short := mustIssue(t, ca, CertRequest{CommonName: "c", Usage: UsageClient, Validity: 2 * time.Hour})
	if want := clk.Now().Add(2 * time.Hour); !short.Cert.NotAfter.Equal(want) {
		t.Errorf("NotAfter %s, want %s (not clamped)", short.Cert.NotAfter, want)
	}

	clk.Advance(10*24*time.Hour - 30*time.Second)
	if _, err := ca.Issue(CertRequest{CommonName: "c", Usage: UsageClient}); err == nil || !strings.Contains(err.Error(), "rotate the CA") {
		t.Errorf("Issue 30s before CA expiry: %v, want a rotate-the-CA error", err)
	}
	clk.Advance(time.Minute)
	_, err := ca.Issue(CertRequest{CommonName: "c", Usage: UsageClient})
	if err == nil || !strings.Contains(err.Error(), "expired") || !strings.Contains(err.Error(), ca.URL()) {
		t.Errorf("Issue from an expired CA: %v, want an expired error naming %s", err, ca.URL())
	}
}

func TestParseKeypairPEM(t *testing.T) {
	ks, _, _ := newKeystore(t)
	ca := mustEnsureCA(t, ks, CAKubernetes, CAOptions{})
	a := mustIssue(t, ca, CertRequest{CommonName: "a", Usage: UsageClient})
	b := mustIssue(t, ca, CertRequest{CommonName: "b", Usage: UsageClient, KeyType: KeyRSA2048})

	ecKey, err := x509.MarshalECPrivateKey(mustECDSA(t, a.Key))
	if err != nil {
		t.Fatal(err)
	}
	rsaKey := x509.MarshalPKCS1PrivateKey(mustRSA(t, b.Key))
	cases := []struct {
		name     string
		cert     []byte
		key      []byte
		wantErr  string
		wantCert *x509.Certificate
	}{
		{"pkcs8 ecdsa", a.CertPEM, a.KeyPEM, "", a.Cert},
		{"pkcs8 rsa", b.CertPEM, b.KeyPEM, "", b.Cert},
		{"sec1 ecdsa", a.CertPEM, pemBlock("EC PRIVATE KEY", ecKey), "", a.Cert},
		{"pkcs1 rsa", b.CertPEM, pemBlock("RSA PRIVATE KEY", rsaKey), "", b.Cert},
		{"cert after other blocks", append(pemBlock("FOO", []byte{1}), a.CertPEM...), a.KeyPEM, "", a.Cert},
		{"mismatch", a.CertPEM, b.KeyPEM, "does not match certificate", nil},
		{"no cert", []byte("junk"), a.KeyPEM, "no PEM CERTIFICATE block", nil},
		{"no key", a.CertPEM, a.CertPEM, "no PEM private key block", nil},
		{"bad key DER", a.CertPEM, pemBlock("PRIVATE KEY", []byte{0x30, 0x01, 0x00}), "parsing PRIVATE KEY", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kp, err := ParseKeypairPEM(tc.cert, tc.key)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseKeypairPEM: %v, want error %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !kp.Cert.Equal(tc.wantCert) || !publicKeysEqual(kp.Key.Public(), tc.wantCert.PublicKey) {
				t.Error("parsed keypair differs")
			}
			if _, err := kp.TLSCertificate(); err != nil {
				t.Error(err)
			}
		})
	}
}
