package pki

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/kopsnode/agents/pkg/store"
)

// TestEnsureSigningKeyRaceStoresOne: control-plane nodes racing to create
// the service-account key all end up with the one stored key.
func TestEnsureSigningKeyRaceStoresOne(t *testing.T) {
	ks, _, _ := newKeystore(t)
	ctx := context.Background()
	const n = 8
	keys := make([]*PrivateKey, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keys[i], errs[i] = ks.EnsureSigningKey(ctx, SigningKeyServiceAccount)
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if !publicKeysEqual(keys[i].Public(), keys[0].Public()) {
			t.Fatalf("caller %d got another key than caller 0", i)
		}
	}
	if _, ok := keys[0].Unwrap().(*rsa.PrivateKey); !ok {
		t.Errorf("key type %T, want RSA", keys[0].Unwrap())
	}
	again, err := ks.LoadSigningKey(ctx, SigningKeyServiceAccount)
	if err != nil || !publicKeysEqual(again.Public(), keys[0].Public()) {
		t.Fatalf("LoadSigningKey = %v, %v; want the created key", again, err)
	}
	// Not a CA: the listing of CAs does not show it.
	cas, err := ks.ListCAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cas {
		if c == SigningKeyServiceAccount {
			t.Errorf("ListCAs lists the signing key: %v", cas)
		}
	}
}

func TestLoadSigningKeyErrors(t *testing.T) {
	ks, s, _ := newKeystore(t)
	ctx := context.Background()
	if _, err := ks.LoadSigningKey(ctx, "service-account"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing key: err = %v, want ErrNotFound", err)
	}
	key := "test-cluster/pki/service-account/signing-key.pem"
	if _, err := s.Put(ctx, key, strings.NewReader("garbage"), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	_, err := ks.EnsureSigningKey(ctx, "service-account")
	if err == nil || !strings.Contains(err.Error(), key) {
		t.Fatalf("corrupt key: err = %v, want one naming %s", err, key)
	}
	if _, err := ks.EnsureSigningKey(ctx, "Bad/Name"); err == nil {
		t.Fatal("bad name accepted")
	}
}

func TestCAKeyPEMAndPublicKeyPEM(t *testing.T) {
	ks, _, _ := newKeystore(t)
	ca := mustEnsureCA(t, ks, CAFrontProxy, CAOptions{})
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(keyPEM) != "REDACTED" {
		t.Errorf("the CA key prints as %q", fmt.Sprint(keyPEM))
	}
	kp, err := ParseKeypairPEM(ca.CertPEM(), keyPEM)
	if err != nil {
		t.Fatalf("the CA key does not match its certificate: %v", err)
	}
	pubPEM, err := MarshalPublicKeyPEM(kp.Key.Public())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(pubPEM)
	if b == nil || b.Type != "PUBLIC KEY" {
		t.Fatalf("public key PEM = %q", pubPEM)
	}
	pub, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil || !publicKeysEqual(pub, ca.Cert().PublicKey) {
		t.Fatalf("public key round trip: %v", err)
	}
	var empty *CA
	if _, err := empty.KeyPEM(); err == nil {
		t.Error("empty CA gave a key")
	}
}
