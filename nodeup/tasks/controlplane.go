package tasks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/fsroot"
	"github.com/kopsnode/agents/pkg/pki"
	"github.com/kopsnode/agents/pkg/store"
)

// The control plane's key material on disk. These tasks read CA keys from
// the state store: only control-plane nodes use them.

// PKIDiff says which key material files are (re)written and why. Contents
// are never shown: they hold private keys.
type PKIDiff struct {
	What   string
	Paths  []string
	Reason string
}

func (d *PKIDiff) Render(w io.Writer) {
	fmt.Fprintf(w, "%s: write %s (%s)\n", d.What, strings.Join(d.Paths, ", "), d.Reason)
}

// Certificate keeps a certificate and its private key, issued from a CA of
// the state store's PKI, in two files (the key mode 0600). It keeps the
// existing pair while the key matches, the certificate was issued by the
// current CA for the same subject and names, and it is not due for
// rotation; so re-runs do not restart the services that read it.
type Certificate struct {
	CertPath string
	KeyPath  string
	CA       string // CA name, such as pki.CAKubernetes
	Request  pki.CertRequest
	Keystore *pki.Keystore
	Now      func() time.Time
	Needs    []string
}

func (t *Certificate) ID() string          { return FileID(t.CertPath) }
func (t *Certificate) Deps() []string      { return t.Needs }
func (t *Certificate) Phase() engine.Phase { return engine.PhaseBoot }

// Outputs are both files the task writes.
func (t *Certificate) Outputs() []string { return []string{t.CertPath, t.KeyPath} }

func (t *Certificate) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

func (t *Certificate) Find(ctx context.Context, env *engine.Env) (engine.Diff, error) {
	reason, err := t.check(ctx, env)
	if err != nil || reason == "" {
		return nil, err
	}
	return &PKIDiff{What: fmt.Sprintf("issue certificate CN=%s from %s", t.Request.CommonName, t.CA), Paths: t.Outputs(), Reason: reason}, nil
}

// check returns why the pair must be reissued, "" when it is good.
func (t *Certificate) check(ctx context.Context, env *engine.Env) (string, error) {
	certPEM, err := env.FS.ReadFile(t.CertPath)
	if errors.Is(err, fs.ErrNotExist) {
		return "missing", nil
	}
	if err != nil {
		return "", err
	}
	keyPEM, err := env.FS.ReadFile(t.KeyPath)
	if errors.Is(err, fs.ErrNotExist) {
		return "key missing", nil
	}
	if err != nil {
		return "", err
	}
	kp, err := pki.ParseKeypairPEM(certPEM, keyPEM)
	if err != nil {
		return "unreadable, or the key does not match the certificate", nil
	}
	c, r := kp.Cert, t.Request
	if c.Subject.CommonName != r.CommonName {
		return fmt.Sprintf("certificate is for %s", c.Subject.CommonName), nil
	}
	if !sameStrings(c.Subject.Organization, r.Organization) {
		return fmt.Sprintf("groups %v, want %v", c.Subject.Organization, r.Organization), nil
	}
	if !sameStrings(c.DNSNames, r.DNSNames) {
		return fmt.Sprintf("DNS names %v, want %v", c.DNSNames, r.DNSNames), nil
	}
	if !sameStrings(ipStrings(c.IPAddresses), ipStrings(r.IPs)) {
		return fmt.Sprintf("IP addresses %v, want %v", c.IPAddresses, r.IPs), nil
	}
	if pki.NeedsRotation(c, t.now(), pki.DefaultRotationFraction) {
		return "certificate due for rotation", nil
	}
	for p, mode := range map[string]fs.FileMode{t.CertPath: 0o644, t.KeyPath: 0o600} {
		if fi, err := env.FS.Stat(p); err == nil && fi.Mode().Perm() != mode {
			return fmt.Sprintf("mode of %s is not %04o", p, mode), nil
		}
	}
	if t.Keystore == nil {
		return "", nil
	}
	caCert, err := t.Keystore.LoadCACert(ctx, t.CA)
	if errors.Is(err, store.ErrNotFound) {
		return "CA " + t.CA + " is not in the state store", nil
	}
	if err != nil {
		// Cannot tell; keep working files rather than fail a re-run.
		return "", nil
	}
	if err := c.CheckSignatureFrom(caCert); err != nil {
		return "certificate not issued by the current CA " + t.CA, nil
	}
	return "", nil
}

func (t *Certificate) Apply(ctx context.Context, env *engine.Env, _ engine.Diff) error {
	if t.Keystore == nil {
		return &engine.Permanent{Err: fmt.Errorf("writing %s: no state store keystore to issue the certificate from", t.CertPath)}
	}
	ca, err := t.Keystore.EnsureCA(ctx, t.CA, pki.CAOptions{})
	if err != nil {
		return fmt.Errorf("loading CA %s: %w", t.CA, err)
	}
	kp, err := ca.Issue(t.Request)
	if err != nil {
		return &engine.Permanent{Err: fmt.Errorf("writing %s: %w", t.CertPath, err)}
	}
	// Key first: a run cut short between the writes leaves a pair that
	// does not match, which the next Find reissues.
	if err := env.FS.WriteFile(t.KeyPath, kp.KeyPEM, 0o600, fsroot.RootOwner); err != nil {
		return err
	}
	return env.FS.WriteFile(t.CertPath, kp.CertPEM, 0o644, fsroot.RootOwner)
}

func sameStrings(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

// CAFiles writes a CA's certificate (mode 0644) and, when KeyPath is set,
// its private key (mode 0600) from the state store, creating the CA when
// the store has none (create-if-absent: the first control-plane node
// creates it, the others get the same one).
type CAFiles struct {
	CA       string
	CertPath string
	// KeyPath is empty unless a local signer needs the key
	// (kube-controller-manager's --cluster-signing-key-file).
	KeyPath  string
	Keystore *pki.Keystore
	Needs    []string
}

func (t *CAFiles) ID() string          { return FileID(t.CertPath) }
func (t *CAFiles) Deps() []string      { return t.Needs }
func (t *CAFiles) Phase() engine.Phase { return engine.PhaseBoot }

// Outputs are the files the task writes.
func (t *CAFiles) Outputs() []string {
	if t.KeyPath == "" {
		return []string{t.CertPath}
	}
	return []string{t.CertPath, t.KeyPath}
}

func (t *CAFiles) Find(ctx context.Context, env *engine.Env) (engine.Diff, error) {
	if t.Keystore == nil {
		return nil, &engine.Permanent{Err: fmt.Errorf("writing %s: no state store keystore to read CA %s from", t.CertPath, t.CA)}
	}
	what := "CA " + t.CA
	ca, err := t.Keystore.LoadCA(ctx, t.CA)
	if errors.Is(err, store.ErrNotFound) {
		return &PKIDiff{What: what, Paths: t.Outputs(), Reason: "create the CA in the state store"}, nil
	}
	if err != nil {
		return nil, err
	}
	return diffPKIFiles(env, what, t.files(ca))
}

type pkiFile struct {
	path string
	data []byte
	mode fs.FileMode
	err  error
}

func (t *CAFiles) files(ca *pki.CA) []pkiFile {
	out := []pkiFile{{path: t.CertPath, data: ca.CertPEM(), mode: 0o644}}
	if t.KeyPath != "" {
		k, err := ca.KeyPEM()
		out = append(out, pkiFile{path: t.KeyPath, data: k, mode: 0o600, err: err})
	}
	return out
}

func (t *CAFiles) Apply(ctx context.Context, env *engine.Env, _ engine.Diff) error {
	ca, err := t.Keystore.EnsureCA(ctx, t.CA, pki.CAOptions{})
	if err != nil {
		return fmt.Errorf("loading CA %s: %w", t.CA, err)
	}
	return writePKIFiles(env, t.files(ca))
}

// diffPKIFiles compares files taken from the store with the node's copies
// and names those that differ.
func diffPKIFiles(env *engine.Env, what string, files []pkiFile) (engine.Diff, error) {
	var changed []string
	for _, f := range files {
		if f.err != nil {
			return nil, f.err
		}
		d, err := findFile(env, f.path, f.data, f.mode, fsroot.RootOwner, true)
		if err != nil {
			return nil, err
		}
		if d != nil {
			changed = append(changed, f.path)
		}
	}
	if len(changed) == 0 {
		return nil, nil
	}
	return &PKIDiff{What: what, Paths: changed, Reason: "differs from the state store"}, nil
}

func writePKIFiles(env *engine.Env, files []pkiFile) error {
	for _, f := range files {
		if f.err != nil {
			return f.err
		}
		if err := env.FS.WriteFile(f.path, f.data, f.mode, fsroot.RootOwner); err != nil {
			return err
		}
	}
	return nil
}

// SigningKeyFiles writes a signing key pair kept in the state store (the
// cluster's service-account key): the private key (0600) and the public key
// (0644). The first control-plane node creates it (create-if-absent), so
// every API server signs and validates with the same key.
type SigningKeyFiles struct {
	Name     string // pki.SigningKeyServiceAccount
	KeyPath  string
	PubPath  string
	Keystore *pki.Keystore
	Needs    []string
}

func (t *SigningKeyFiles) ID() string          { return FileID(t.KeyPath) }
func (t *SigningKeyFiles) Deps() []string      { return t.Needs }
func (t *SigningKeyFiles) Phase() engine.Phase { return engine.PhaseBoot }

// Outputs are both files the task writes.
func (t *SigningKeyFiles) Outputs() []string { return []string{t.KeyPath, t.PubPath} }

func (t *SigningKeyFiles) files(k *pki.PrivateKey) []pkiFile {
	priv, err := pki.MarshalPrivateKeyPEM(k)
	pub, perr := pki.MarshalPublicKeyPEM(k.Public())
	return []pkiFile{{path: t.KeyPath, data: priv, mode: 0o600, err: err}, {path: t.PubPath, data: pub, mode: 0o644, err: perr}}
}

func (t *SigningKeyFiles) Find(ctx context.Context, env *engine.Env) (engine.Diff, error) {
	if t.Keystore == nil {
		return nil, &engine.Permanent{Err: fmt.Errorf("writing %s: no state store keystore to read signing key %s from", t.KeyPath, t.Name)}
	}
	what := "signing key " + t.Name
	k, err := t.Keystore.LoadSigningKey(ctx, t.Name)
	if errors.Is(err, store.ErrNotFound) {
		return &PKIDiff{What: what, Paths: t.Outputs(), Reason: "create the key in the state store"}, nil
	}
	if err != nil {
		return nil, err
	}
	return diffPKIFiles(env, what, t.files(k))
}

func (t *SigningKeyFiles) Apply(ctx context.Context, env *engine.Env, _ engine.Diff) error {
	k, err := t.Keystore.EnsureSigningKey(ctx, t.Name)
	if err != nil {
		return fmt.Errorf("loading signing key %s: %w", t.Name, err)
	}
	return writePKIFiles(env, t.files(k))
}
