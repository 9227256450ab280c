package tasks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"time"

	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/fsroot"
	"github.com/kopsnode/agents/nodeup/kuberender"
	"github.com/kopsnode/agents/pkg/pki"
)

// Kubeconfig writes a kubeconfig with a client certificate issued from a CA
// in the state store's PKI. It keeps the existing file while its
// certificate was issued by the current CA for the same user, groups and
// server and is not due for rotation, so re-runs do not restart the kubelet.
// It reads the CA's key: only control-plane nodes use it.
type Kubeconfig struct {
	Path     string
	Server   string
	User     string // certificate CN, e.g. system:node:<hostname>
	Groups   []string
	CA       string // CA name, pki.CAKubernetes
	Keystore *pki.Keystore
	Now      func() time.Time
	Needs    []string
}

func (t *Kubeconfig) ID() string          { return FileID(t.Path) }
func (t *Kubeconfig) Deps() []string      { return t.Needs }
func (t *Kubeconfig) Phase() engine.Phase { return engine.PhaseBoot }

// KubeconfigDiff says why a new certificate is issued.
type KubeconfigDiff struct{ Path, User, Reason string }

func (d *KubeconfigDiff) Render(w io.Writer) {
	fmt.Fprintf(w, "issue client certificate CN=%s and write %s (mode 0600; %s)\n", d.User, d.Path, d.Reason)
}

func (t *Kubeconfig) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

func (t *Kubeconfig) Find(ctx context.Context, env *engine.Env) (engine.Diff, error) {
	d := &KubeconfigDiff{Path: t.Path, User: t.User}
	b, err := env.FS.ReadFile(t.Path)
	if errors.Is(err, fs.ErrNotExist) {
		d.Reason = "missing"
		return d, nil
	}
	if err != nil {
		return nil, err
	}
	reason := t.check(ctx, b)
	if reason == "" {
		if fi, err := env.FS.Stat(t.Path); err == nil && fi.Mode().Perm() != 0o600 {
			reason = "mode is not 0600"
		}
	}
	if reason == "" {
		return nil, nil
	}
	d.Reason = reason
	return d, nil
}

// check returns why the kubeconfig must be replaced, "" when it is good.
func (t *Kubeconfig) check(ctx context.Context, b []byte) string {
	kc, err := kuberender.ParseKubeconfig(b)
	if err != nil {
		return "unreadable"
	}
	if kc.Server != t.Server {
		return fmt.Sprintf("server %s, want %s", kc.Server, t.Server)
	}
	cert, err := pki.ParseCertPEM(kc.Credentials.ClientCertPEM)
	if err != nil {
		return "client certificate unreadable"
	}
	if cert.Subject.CommonName != t.User {
		return fmt.Sprintf("certificate is for %s", cert.Subject.CommonName)
	}
	if !slices.Equal(slices.Sorted(slices.Values(cert.Subject.Organization)), slices.Sorted(slices.Values(t.Groups))) {
		return fmt.Sprintf("certificate groups %v, want %v", cert.Subject.Organization, t.Groups)
	}
	if pki.NeedsRotation(cert, t.now(), pki.DefaultRotationFraction) {
		return "certificate due for rotation"
	}
	if t.Keystore == nil {
		return ""
	}
	caCert, err := t.Keystore.LoadCACert(ctx, t.CA)
	if err != nil {
		// Cannot tell; keep a working file rather than fail a re-run.
		return ""
	}
	if err := cert.CheckSignatureFrom(caCert); err != nil {
		return "certificate not issued by the current CA " + t.CA
	}
	return ""
}

func (t *Kubeconfig) Apply(ctx context.Context, env *engine.Env, _ engine.Diff) error {
	if t.Keystore == nil {
		return &engine.Permanent{Err: fmt.Errorf("writing %s: no state store keystore to issue the client certificate from", t.Path)}
	}
	ca, err := t.Keystore.EnsureCA(ctx, t.CA, pki.CAOptions{})
	if err != nil {
		return fmt.Errorf("loading CA %s: %w", t.CA, err)
	}
	kp, err := ca.Issue(pki.CertRequest{CommonName: t.User, Organization: t.Groups, Usage: pki.UsageClient})
	if err != nil {
		return &engine.Permanent{Err: err}
	}
	b, err := kuberender.Kubeconfig(kuberender.KubeconfigSpec{
		Server: t.Server, CAPEM: ca.CertPEM(), User: t.User,
		Credentials: kuberender.Credentials{ClientCertPEM: kp.CertPEM, ClientKeyPEM: []byte(kp.KeyPEM)},
	})
	if err != nil {
		return &engine.Permanent{Err: fmt.Errorf("writing %s: %w", t.Path, err)}
	}
	return env.FS.WriteFile(t.Path, b, 0o600, fsroot.RootOwner)
}
