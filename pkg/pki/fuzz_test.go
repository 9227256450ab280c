package pki

import (
	"strings"
	"testing"
	"time"
)

// fuzzSeeds returns a valid CA bundle and keypair to seed the fuzzers with.
func fuzzSeeds(f *testing.F) (bundle []byte, kp *Keypair) {
	f.Helper()
	cert, key, err := newSelfSignedCA("fuzz-ca", CAOptions{}, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	bundle, err = encodeCABundle(cert, key)
	if err != nil {
		f.Fatal(err)
	}
	kp, err = newKeypair(cert, key)
	if err != nil {
		f.Fatal(err)
	}
	return bundle, kp
}

// Stored CA bundles come from a bucket: no input may panic the decoder, and
// a successful decode is a CA with its own key.
func FuzzDecodeCABundle(f *testing.F) {
	bundle, kp := fuzzSeeds(f)
	f.Add(bundle)
	f.Add(kp.CertPEM)
	f.Add([]byte(kp.KeyPEM))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		cert, key, err := decodeCABundle(data)
		if err != nil {
			if strings.Contains(err.Error(), "PRIVATE KEY-----") {
				t.Fatalf("error echoes PEM content: %v", err)
			}
			return
		}
		if !cert.IsCA || !publicKeysEqual(cert.PublicKey, key.Public()) {
			t.Fatal("decoded a bundle that is not a CA with its key")
		}
	})
}

func FuzzParseKeypairPEM(f *testing.F) {
	_, kp := fuzzSeeds(f)
	f.Add(kp.CertPEM, []byte(kp.KeyPEM))
	f.Add(kp.CertPEM, kp.CertPEM)
	f.Add([]byte("x"), []byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte) {
		got, err := ParseKeypairPEM(certPEM, keyPEM)
		if err != nil {
			return
		}
		if !publicKeysEqual(got.Cert.PublicKey, got.Key.Public()) {
			t.Fatal("parsed a keypair whose key does not match")
		}
	})
}
