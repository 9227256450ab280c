package pki

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
)

// Keypair is a certificate and its private key, parsed and as PEM.
//
// Key holds a *PrivateKey and KeyPEM is a PrivatePEM: both print as
// "REDACTED" through fmt, slog and JSON. The Keypair itself logs as its
// certificate's subject, serial and validity.
type Keypair struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  PrivatePEM
}

// newKeypair assembles a Keypair from a parsed certificate and key.
func newKeypair(cert *x509.Certificate, key *PrivateKey) (*Keypair, error) {
	keyPEM, err := marshalKeyPEM(key)
	if err != nil {
		return nil, err
	}
	return &Keypair{
		Cert:    cert,
		Key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		KeyPEM:  keyPEM,
	}, nil
}

// ParseKeypairPEM parses a PEM certificate (the first CERTIFICATE block of
// certPEM) and a PEM private key (PKCS#8, SEC 1 "EC PRIVATE KEY" or PKCS#1
// "RSA PRIVATE KEY"), and checks that the key belongs to the certificate.
// Error messages never contain key material.
func ParseKeypairPEM(certPEM, keyPEM []byte) (*Keypair, error) {
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, err
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("private key does not match certificate %q (serial %s)", cert.Subject.CommonName, cert.SerialNumber.Text(16))
	}
	return &Keypair{
		Cert:    cert,
		Key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		KeyPEM:  PrivatePEM(append([]byte(nil), keyPEM...)),
	}, nil
}

// parseCertPEM returns the first CERTIFICATE block in data, parsed.
func parseCertPEM(data []byte) (*x509.Certificate, error) {
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("no PEM CERTIFICATE block found")
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate: %w", err)
		}
		return c, nil
	}
}

// parseKeyPEM returns the first private key block in data, parsed.
func parseKeyPEM(data []byte) (*PrivateKey, error) {
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("no PEM private key block found")
		}
		switch b.Type {
		case "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY":
			return parseKeyDER(b)
		}
	}
}

// TLSCertificate returns the keypair as a tls.Certificate (leaf only; peers
// are expected to hold the CA).
func (kp *Keypair) TLSCertificate() (tls.Certificate, error) {
	if kp == nil || kp.Cert == nil || kp.Key == nil {
		return tls.Certificate{}, errors.New("keypair is empty (no certificate or key)")
	}
	return tls.Certificate{Certificate: [][]byte{kp.Cert.Raw}, PrivateKey: kp.Key, Leaf: kp.Cert}, nil
}

// LogValue logs the certificate's identity and validity, never the key.
func (kp *Keypair) LogValue() slog.Value {
	if kp == nil || kp.Cert == nil {
		return slog.StringValue("<empty keypair>")
	}
	return certLogValue(kp.Cert)
}

// String describes the certificate; the key prints as REDACTED.
func (kp *Keypair) String() string {
	if kp == nil || kp.Cert == nil {
		return "<empty keypair>"
	}
	return fmt.Sprintf("keypair{cn=%q serial=%s notAfter=%s key=%s}",
		kp.Cert.Subject.CommonName, kp.Cert.SerialNumber.Text(16), kp.Cert.NotAfter.UTC().Format("2006-01-02T15:04:05Z"), redacted)
}

// Format prints String for every verb, so %v, %+v and %#v cannot reach the
// key through reflection.
func (kp *Keypair) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, kp.String()) }

func certLogValue(c *x509.Certificate) slog.Value {
	return slog.GroupValue(
		slog.String("cn", c.Subject.CommonName),
		slog.String("serial", c.SerialNumber.Text(16)),
		slog.Time("notBefore", c.NotBefore),
		slog.Time("notAfter", c.NotAfter),
		slog.String("key", redacted),
	)
}

// WriteKeypairFiles writes the certificate (mode 0644) and the private key
// (mode 0600) to local files, each atomically: a temp file in the target
// directory, fsync, rename, fsync of the directory. The key's temp file is
// created with mode 0600, so the key is never readable by others, not even
// for an instant. Missing directories are created with mode 0755.
func (kp *Keypair) WriteKeypairFiles(certPath, keyPath string) error {
	if kp == nil || len(kp.CertPEM) == 0 || len(kp.KeyPEM) == 0 {
		return errors.New("writing keypair files: keypair is empty")
	}
	if err := WriteFileAtomic(keyPath, kp.KeyPEM, 0o600); err != nil {
		return err
	}
	return WriteFileAtomic(certPath, kp.CertPEM, 0o644)
}

// WriteFileAtomic writes data to path atomically with mode perm: the temp
// file is created with mode 0600 and chmod-ed to perm before the rename, so
// a secret written with perm 0600 is never more readable than that. Readers
// see the old content or the new, never a partial file.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("writing %s: creating directory: %w", path, err)
	}
	// os.CreateTemp opens with O_EXCL and mode 0600.
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: creating temp file: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("writing %s: chmod %o: %w", tmp, perm, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing %s: fsync: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: close: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: rename: %w", path, err)
	}
	ok = true
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("writing %s: opening directory for fsync: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("writing %s: fsync directory %s: %w", path, dir, err)
	}
	return nil
}
