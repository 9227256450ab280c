package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
)

// KeyType names a private key algorithm and size.
type KeyType string

const (
	// KeyECDSAP256 is the default: ECDSA on NIST P-256.
	KeyECDSAP256 KeyType = "ecdsa-p256"
	// KeyRSA2048 is RSA with a 2048-bit modulus, for consumers that cannot
	// handle ECDSA.
	KeyRSA2048 KeyType = "rsa-2048"
)

// redacted is what every formatting of private key material prints.
const redacted = "REDACTED"

func (k KeyType) orDefault() KeyType {
	if k == "" {
		return KeyECDSAP256
	}
	return k
}

// generateKey makes a new private key of type t ("" means the default).
func generateKey(t KeyType) (*PrivateKey, error) {
	switch t.orDefault() {
	case KeyECDSAP256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generating ECDSA P-256 key: %w", err)
		}
		return &PrivateKey{signer: k}, nil
	case KeyRSA2048:
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, fmt.Errorf("generating RSA 2048 key: %w", err)
		}
		return &PrivateKey{signer: k}, nil
	default:
		return nil, fmt.Errorf("unsupported key type %q (want %q or %q)", t, KeyECDSAP256, KeyRSA2048)
	}
}

// PrivateKey holds a private key and implements crypto.Signer, so it can be
// used anywhere a signer is accepted (x509.CreateCertificate, tls.Certificate).
// Every way of printing it (fmt verbs, slog, JSON) yields "REDACTED": the key
// material cannot reach a log by accident. Unwrap returns the underlying key
// for the rare caller that needs its concrete type.
type PrivateKey struct {
	signer crypto.Signer
}

// Public returns the public half of the key.
func (k *PrivateKey) Public() crypto.PublicKey {
	if k == nil || k.signer == nil {
		return nil
	}
	return k.signer.Public()
}

// Sign signs digest with the key; see crypto.Signer.
func (k *PrivateKey) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if k == nil || k.signer == nil {
		return nil, errors.New("sign with an empty private key")
	}
	return k.signer.Sign(r, digest, opts)
}

// Unwrap returns the underlying key (*ecdsa.PrivateKey or *rsa.PrivateKey).
// Whoever calls it takes over the duty not to print it.
func (k *PrivateKey) Unwrap() crypto.Signer {
	if k == nil {
		return nil
	}
	return k.signer
}

// Type reports the key's algorithm and size, or "" when unknown.
func (k *PrivateKey) Type() KeyType {
	if k == nil {
		return ""
	}
	switch s := k.signer.(type) {
	case *ecdsa.PrivateKey:
		if s.Curve == elliptic.P256() {
			return KeyECDSAP256
		}
	case *rsa.PrivateKey:
		if s.N.BitLen() == 2048 {
			return KeyRSA2048
		}
	}
	return ""
}

// String returns "REDACTED".
func (k *PrivateKey) String() string { return redacted }

// GoString returns "REDACTED", for %#v.
func (k *PrivateKey) GoString() string { return redacted }

// Format prints "REDACTED" for every verb.
func (k *PrivateKey) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LogValue makes slog print "REDACTED".
func (k *PrivateKey) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON encodes the key as the string "REDACTED".
func (k *PrivateKey) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText encodes the key as "REDACTED" (text-based encoders, slog).
func (k *PrivateKey) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// PrivatePEM is PEM-encoded private key material. It is a byte slice, so
// writing it to a file or passing it to tls.X509KeyPair works unchanged, but
// printing it (fmt verbs, slog, JSON) yields "REDACTED".
type PrivatePEM []byte

// String returns "REDACTED".
func (p PrivatePEM) String() string { return redacted }

// GoString returns "REDACTED", for %#v.
func (p PrivatePEM) GoString() string { return redacted }

// Format prints "REDACTED" for every verb.
func (p PrivatePEM) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LogValue makes slog print "REDACTED".
func (p PrivatePEM) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON encodes the material as the string "REDACTED".
func (p PrivatePEM) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText encodes the material as "REDACTED".
func (p PrivatePEM) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// marshalKeyPEM encodes a key as a PKCS#8 "PRIVATE KEY" PEM block.
func marshalKeyPEM(k *PrivateKey) (PrivatePEM, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.Unwrap())
	if err != nil {
		return nil, fmt.Errorf("encoding private key: %w", err)
	}
	return PrivatePEM(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), nil
}

// parseKeyDER decodes a private key block of any of the usual PEM types.
// Errors never include the key bytes.
func parseKeyDER(b *pem.Block) (*PrivateKey, error) {
	var (
		k   any
		err error
	)
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", b.Type)
	}
	if err != nil {
		// The parse errors of crypto/x509 describe structure, not content.
		return nil, fmt.Errorf("parsing %s: %w", b.Type, err)
	}
	switch s := k.(type) {
	case *ecdsa.PrivateKey:
		return &PrivateKey{signer: s}, nil
	case *rsa.PrivateKey:
		return &PrivateKey{signer: s}, nil
	default:
		return nil, fmt.Errorf("unsupported private key type %T (want ECDSA or RSA)", k)
	}
}

// publicKeysEqual reports whether two public keys are the same key.
func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	ea, ok := a.(equaler)
	return ok && ea.Equal(b)
}
