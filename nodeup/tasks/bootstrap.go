package tasks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/fsroot"
	"github.com/kopsnode/agents/nodeup/kuberender"
	"github.com/kopsnode/agents/pkg/bootstraptoken"
	"github.com/kopsnode/agents/pkg/pki"
	"github.com/kopsnode/agents/pkg/store"
)

// CACertFile writes the public certificate of a store CA (never its key)
// to a file, for components that verify peers signed by it (the kubelet's
// client CA file). It reads only <pki>/<ca>/ca.crt.
type CACertFile struct {
	Path     string
	CA       string // CA name, pki.CAKubernetes
	Keystore *pki.Keystore
	Needs    []string
}

func (t *CACertFile) ID() string          { return FileID(t.Path) }
func (t *CACertFile) Deps() []string      { return t.Needs }
func (t *CACertFile) Phase() engine.Phase { return engine.PhaseBoot }

func (t *CACertFile) Find(ctx context.Context, env *engine.Env) (engine.Diff, error) {
	if t.Keystore == nil {
		return nil, &engine.Permanent{Err: fmt.Errorf("writing %s: no state store keystore to read CA %s from", t.Path, t.CA)}
	}
	pem, err := caCertPEM(ctx, t.Keystore, t.CA)
	if err != nil {
		return nil, fmt.Errorf("writing %s: %w", t.Path, err)
	}
	d, err := findFile(env, t.Path, pem, 0o644, fsroot.RootOwner, false)
	if d == nil || err != nil {
		return nil, err
	}
	return d, nil
}

func (t *CACertFile) Apply(ctx context.Context, env *engine.Env, d engine.Diff) error {
	return applyFile(env, d.(*FileDiff))
}

func caCertPEM(ctx context.Context, ks *pki.Keystore, ca string) ([]byte, error) {
	c, err := ks.LoadCACert(ctx, ca)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("%w (a control-plane node publishes it on its first run)", err)
		}
		return nil, err
	}
	return pki.EncodeCertPEM(c), nil
}

// BootstrapKubeconfig writes the kubelet's bootstrap kubeconfig on a node
// that joins by TLS bootstrap: the cluster's bootstrap token and the
// kubernetes CA's public certificate. The kubelet uses it once to obtain
// its client certificate through a CSR and then writes its own kubeconfig,
// so the node never holds a CA key.
type BootstrapKubeconfig struct {
	Path     string
	Server   string
	CA       string // CA name, pki.CAKubernetes
	Keystore *pki.Keystore
	// Store and Cluster locate the token (bootstraptoken.Key(Cluster)).
	Store   store.Store
	Cluster string
	// Now is the clock against which the token's expiry is checked
	// (time.Now when nil).
	Now func() time.Time
	// JoinedCert is the kubelet's own client certificate, which it writes
	// once its CSR is approved (and rotates itself). While it is valid and
	// the bootstrap kubeconfig exists, the node has joined and the file is
	// left as it is: a rotated or expired token then neither blocks a
	// joined node's boot nor restarts its kubelet.
	JoinedCert string
	Needs      []string
}

// BootstrapUser names the user entry of bootstrap kubeconfigs.
const BootstrapUser = "kubelet-bootstrap"

func (t *BootstrapKubeconfig) ID() string          { return FileID(t.Path) }
func (t *BootstrapKubeconfig) Deps() []string      { return t.Needs }
func (t *BootstrapKubeconfig) Phase() engine.Phase { return engine.PhaseBoot }

func (t *BootstrapKubeconfig) Find(ctx context.Context, env *engine.Env) (engine.Diff, error) {
	if t.Keystore == nil || t.Store == nil {
		return nil, &engine.Permanent{Err: fmt.Errorf("writing %s: no state store to read the bootstrap token and CA %s from", t.Path, t.CA)}
	}
	ca, err := caCertPEM(ctx, t.Keystore, t.CA)
	if err != nil {
		return nil, fmt.Errorf("writing %s: %w", t.Path, err)
	}
	now := time.Now
	if t.Now != nil {
		now = t.Now
	}
	if t.joined(env, now()) {
		return nil, nil
	}
	// An expired token is an error (retried: the control plane replaces
	// it), never written: the kubelet would be refused with no hint why.
	tok, err := bootstraptoken.ReadUsable(ctx, t.Store, t.Cluster, now())
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = fmt.Errorf("no node bootstrap token at %s (a control-plane node creates it on its first run): %w",
				store.JoinURL(t.Store.URL(), bootstraptoken.Key(t.Cluster)), err)
		}
		return nil, fmt.Errorf("writing %s: %w", t.Path, err)
	}
	b, err := kuberender.Kubeconfig(kuberender.KubeconfigSpec{
		Server: t.Server, CAPEM: ca, User: BootstrapUser,
		Credentials: kuberender.Credentials{Token: tok.Token.String()},
	})
	if err != nil {
		return nil, &engine.Permanent{Err: fmt.Errorf("writing %s: %w", t.Path, err)}
	}
	d, err := findFile(env, t.Path, b, 0o600, fsroot.RootOwner, true)
	if d == nil || err != nil {
		return nil, err
	}
	return d, nil
}

// joined says the kubelet holds a valid client certificate of its own and
// the bootstrap kubeconfig is in place.
func (t *BootstrapKubeconfig) joined(env *engine.Env, now time.Time) bool {
	if t.JoinedCert == "" || !env.FS.Exists(t.Path) {
		return false
	}
	b, err := env.FS.ReadFile(t.JoinedCert)
	if err != nil {
		return false
	}
	c, err := pki.ParseCertPEM(b)
	return err == nil && now.Before(c.NotAfter) && !now.Before(c.NotBefore)
}

func (t *BootstrapKubeconfig) Apply(ctx context.Context, env *engine.Env, d engine.Diff) error {
	return applyFile(env, d.(*FileDiff))
}

// BootstrapTokenID is the ID of the BootstrapToken task.
const BootstrapTokenID = "bootstrap-token"

// BootstrapToken makes sure the cluster's node bootstrap token exists in the
// store (create-if-absent), so that workers can join. Control-plane nodes
// run it.
type BootstrapToken struct {
	Store   store.Store
	Cluster string
}

func (t *BootstrapToken) ID() string          { return BootstrapTokenID }
func (t *BootstrapToken) Deps() []string      { return nil }
func (t *BootstrapToken) Phase() engine.Phase { return engine.PhaseBoot }

// BootstrapTokenDiff says the token will be created.
type BootstrapTokenDiff struct{ URL string }

func (d *BootstrapTokenDiff) Render(w io.Writer) {
	fmt.Fprintf(w, "create the node bootstrap token at %s\n", d.URL)
}

func (t *BootstrapToken) Find(ctx context.Context, env *engine.Env) (engine.Diff, error) {
	if t.Store == nil {
		return nil, &engine.Permanent{Err: errors.New("creating the node bootstrap token: no state store")}
	}
	_, err := bootstraptoken.Read(ctx, t.Store, t.Cluster)
	switch {
	case err == nil:
		return nil, nil
	case errors.Is(err, store.ErrNotFound):
		return &BootstrapTokenDiff{URL: store.JoinURL(t.Store.URL(), bootstraptoken.Key(t.Cluster))}, nil
	}
	return nil, err
}

func (t *BootstrapToken) Apply(ctx context.Context, env *engine.Env, _ engine.Diff) error {
	tok, created, err := bootstraptoken.Ensure(ctx, t.Store, t.Cluster)
	if err != nil {
		return err
	}
	if created {
		env.Log.Info("created the node bootstrap token", "token", tok, "url", store.JoinURL(t.Store.URL(), bootstraptoken.Key(t.Cluster)))
	}
	return nil
}
