package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/kopsnode/agents/pkg/store"
)

// CAFrontProxy signs the client certificate kube-apiserver presents to
// aggregated API servers (--proxy-client-cert-file); they trust it through
// --requestheader-client-ca-file. Kubernetes wants it apart from
// CAKubernetes, so that a front-proxy certificate cannot act as a user.
const CAFrontProxy = "front-proxy-ca"

// SigningKeyServiceAccount names the key pair that signs service-account
// tokens. There is one per cluster, so every API server validates the
// tokens every other one issued.
const SigningKeyServiceAccount = "service-account"

// signingKeyObject holds a signing key pair (PKCS#8 PEM) inside
// <prefix>/<name>/.
const signingKeyObject = "signing-key.pem"

// KeyPEM returns the CA's private key as PEM, for the one consumer that must
// hold it on disk: kube-controller-manager's CSR signer on control-plane
// nodes (--cluster-signing-key-file).
func (ca *CA) KeyPEM() (PrivatePEM, error) {
	if ca == nil || ca.key == nil {
		return nil, errors.New("CA has no private key")
	}
	return marshalKeyPEM(ca.key)
}

// EnsureSigningKey returns the signing key pair called name, creating an
// RSA 2048 key (what every Kubernetes token consumer accepts) when the store
// has none. Creation is create-if-absent: when control-plane nodes race,
// exactly one key is stored and every caller gets that one.
func (ks *Keystore) EnsureSigningKey(ctx context.Context, name string) (*PrivateKey, error) {
	if err := ValidateCAName(name); err != nil {
		return nil, fmt.Errorf("signing key name: %w", err)
	}
	k, err := ks.LoadSigningKey(ctx, name)
	if err == nil || !errors.Is(err, store.ErrNotFound) {
		return k, err
	}
	k, err = generateKey(KeyRSA2048)
	if err != nil {
		return nil, err
	}
	keyPEM, err := marshalKeyPEM(k)
	if err != nil {
		return nil, err
	}
	_, err = ks.store.Put(ctx, ks.key(name, signingKeyObject), bytes.NewReader(keyPEM), store.Condition{IfAbsent: true})
	switch {
	case errors.Is(err, store.ErrPrecondition):
		ks.logger.Info("another node created the signing key first; using it", "key", name, "url", ks.url(name, signingKeyObject))
		return ks.LoadSigningKey(ctx, name)
	case err != nil:
		return nil, fmt.Errorf("storing new signing key %s: %w", name, err)
	}
	ks.logger.Info("created signing key", "key", name, "url", ks.url(name, signingKeyObject))
	return k, nil
}

// LoadSigningKey reads the signing key pair called name. A missing key is an
// error wrapping store.ErrNotFound; a corrupt one names the object's URL.
func (ks *Keystore) LoadSigningKey(ctx context.Context, name string) (*PrivateKey, error) {
	if err := ValidateCAName(name); err != nil {
		return nil, fmt.Errorf("signing key name: %w", err)
	}
	data, _, err := store.ReadAll(ctx, ks.store, ks.key(name, signingKeyObject))
	if err != nil {
		return nil, fmt.Errorf("loading signing key %s: %w", name, err)
	}
	k, err := parseKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("loading signing key %s from %s: %w", name, ks.url(name, signingKeyObject), err)
	}
	return k, nil
}

// MarshalPrivateKeyPEM encodes a key as PKCS#8 PEM; the result prints as
// REDACTED.
func MarshalPrivateKeyPEM(k *PrivateKey) (PrivatePEM, error) { return marshalKeyPEM(k) }

// MarshalPublicKeyPEM encodes a public key as a PKIX "PUBLIC KEY" PEM block
// (kube-apiserver's --service-account-key-file reads it).
func MarshalPublicKeyPEM(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encoding public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}
