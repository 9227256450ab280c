package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"strings"
	"testing"
)

// secretsOf lists strings that would betray the private key of kp: the key
// PEM, its DER in hex and base64, and the private scalar (ECDSA) or private
// exponent and primes (RSA) in decimal, hex and base64 at every alignment a
// larger base64 text could give them. Public parts (the modulus, the public
// point, which the certificate also carries) are not secrets.
func secretsOf(t *testing.T, kp *Keypair) []string {
	t.Helper()
	b, _ := pem.Decode(kp.KeyPEM)
	if b == nil {
		t.Fatal("KeyPEM does not decode")
	}
	s := []string{string(kp.KeyPEM), hex.EncodeToString(b.Bytes), base64.StdEncoding.EncodeToString(b.Bytes)}
	var private [][]byte
	switch k := kp.Key.(*PrivateKey).Unwrap().(type) {
	case *ecdsa.PrivateKey:
		raw, err := k.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		private = append(private, raw)
	case *rsa.PrivateKey:
		private = append(private, k.D.Bytes(), k.Primes[0].Bytes(), k.Primes[1].Bytes())
	default:
		t.Fatalf("unexpected key type %T", k)
	}
	for _, p := range private {
		s = append(s, hex.EncodeToString(p), strings.ToUpper(hex.EncodeToString(p)), new(big.Int).SetBytes(p).String(), fmt.Sprint(p))
		for shift := range 3 {
			enc := base64.StdEncoding.EncodeToString(append(make([]byte, shift), p...))
			s = append(s, enc[4:len(enc)-4])
		}
	}
	return s
}

// Logging or printing a keypair, its key, its key PEM or a CA in any usual
// way never reveals the private key.
func TestPrivateKeyNeverLogged(t *testing.T) {
	var buf syncBuffer
	textLog := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	jsonLog := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))

	s := newFileStore(t, "")
	clk := newFakeClock()
	// The keystore itself logs into the buffer too (creation, issuing).
	ks, err := NewKeystore(s, "c/pki", textLog, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	ca := mustEnsureCA(t, ks, CAKubernetes, CAOptions{})
	rsaCA := mustEnsureCA(t, ks, CAEtcdClients, CAOptions{KeyType: KeyRSA2048})
	ecKP := mustIssue(t, ca, CertRequest{CommonName: "ec", Usage: UsageClient})
	rsaKP := mustIssue(t, rsaCA, CertRequest{CommonName: "rsa", Usage: UsageClient, KeyType: KeyRSA2048})
	caKP, err := newKeypair(ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	rsaCAKP, err := newKeypair(rsaCA.cert, rsaCA.key)
	if err != nil {
		t.Fatal(err)
	}

	for _, kp := range []*Keypair{ecKP, rsaKP} {
		for _, l := range []*slog.Logger{textLog, jsonLog} {
			l.Info("keypair", "kp", kp, "key", kp.Key, "keyPEM", kp.KeyPEM, "value", *kp, "ca", ca, "rsaCA", rsaCA)
			l.Info("nested", "wrapped", struct {
				KP  *Keypair
				Key any
				PEM PrivatePEM
			}{kp, kp.Key, kp.KeyPEM})
			l.Info("group", slog.Group("g", slog.Any("kp", kp), slog.Any("k", kp.Key)))
		}
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
			fmt.Fprintf(&buf, verb+"\n", kp)
			fmt.Fprintf(&buf, verb+"\n", *kp)
			fmt.Fprintf(&buf, verb+"\n", kp.Key)
			fmt.Fprintf(&buf, verb+"\n", kp.KeyPEM)
			fmt.Fprintf(&buf, verb+"\n", ca)
			fmt.Fprintf(&buf, verb+"\n", *ca)
		}
		j, err := json.Marshal(map[string]any{"key": kp.Key, "pem": kp.KeyPEM})
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(j)
		fmt.Fprintln(&buf, kp.String(), kp.Key.(fmt.Stringer).String(), kp.KeyPEM.String())
	}

	out := buf.String()
	if !strings.Contains(out, "REDACTED") {
		t.Fatal("nothing was logged as REDACTED; the test logged nothing useful")
	}
	if !strings.Contains(out, "cn=ec") && !strings.Contains(out, `"cn":"ec"`) {
		t.Errorf("the keypair's identity was not logged:\n%s", out)
	}
	for _, kp := range []*Keypair{ecKP, rsaKP, caKP, rsaCAKP} {
		for _, secret := range secretsOf(t, kp) {
			if strings.Contains(out, secret) {
				t.Errorf("private key material of %s appears in the log output: %.40q...", kp.Cert.Subject.CommonName, secret)
				for _, line := range strings.Split(out, "\n") {
					if strings.Contains(line, secret) {
						t.Logf("in line: %.300s", line)
					}
				}
			}
		}
	}
	if bytes.Contains([]byte(out), []byte("PRIVATE KEY")) {
		t.Error(`"PRIVATE KEY" appears in the log output`)
	}
	// The checker catches a real leak: the unwrapped keys, printed or
	// marshaled the usual ways, are found.
	for _, kp := range []*Keypair{ecKP, rsaKP} {
		raw := kp.Key.(*PrivateKey).Unwrap()
		j, _ := json.Marshal(raw)
		for _, leak := range []string{fmt.Sprintf("%+v", raw), string(j), string(kp.KeyPEM[:])} {
			if !containsAny(leak, secretsOf(t, kp)) {
				t.Errorf("the checker misses a leaked %s key: %.80q", kp.Cert.Subject.CommonName, leak)
			}
		}
	}
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
