package render

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/bootstraptoken"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/pki"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/textdiff"
	"github.com/kopsnode/agents/protokube/gossipkeys"
)

// Kinds of store objects a change is about.
const (
	KindNodeConfig     = "node-config"
	KindEtcdSpec       = "etcd-spec"
	KindCA             = "ca"
	KindSigningKey     = "signing-key"
	KindBootstrapToken = "bootstrap-token"
	KindGossipKeyring  = "gossip-keyring"
)

// Actions of a change.
const (
	ActionCreate    = "create"
	ActionUpdate    = "update"
	ActionUnchanged = "unchanged"
)

// Change is what happened (or, in a dry run, would happen) to one store
// object. It never carries secret material.
type Change struct {
	Kind   string `json:"kind"`
	Name   string `json:"name"`
	URL    string `json:"url"`
	Action string `json:"action"`
	// Diff is the unified diff of a node configuration or etcd spec that
	// changes.
	Diff string `json:"diff,omitempty"`
}

// applier writes a plan into a store, or reports what it would write.
type applier struct {
	st     store.Store
	dryRun bool
	log    *slog.Logger
	now    func() time.Time
	rand   io.Reader
	out    []Change
}

func (a *applier) add(c Change) {
	a.out = append(a.out, c)
	if c.Action != ActionUnchanged && !a.dryRun {
		a.log.Info("store object written", "kind", c.Kind, "name", c.Name, "action", c.Action, "url", c.URL)
	}
}

// apply writes the secrets first, then the etcd specs, then the node
// configurations, so that a node that boots from a new configuration finds
// everything it refers to.
func (a *applier) apply(ctx context.Context, p *Plan) error {
	if err := a.secrets(ctx, p); err != nil {
		return err
	}
	for _, e := range p.EtcdSpecs {
		if err := a.etcdSpec(ctx, e); err != nil {
			return err
		}
	}
	for _, g := range p.Groups {
		if err := a.nodeConfig(ctx, p.Cluster, g); err != nil {
			return err
		}
	}
	return nil
}

func (a *applier) url(key string) string { return store.JoinURL(a.st.URL(), key) }

func (a *applier) secrets(ctx context.Context, p *Plan) error {
	ks, err := pki.NewKeystore(a.st, p.Cluster+"/pki", a.log, a.now)
	if err != nil {
		return err
	}
	for _, name := range p.CAs {
		act := ActionUnchanged
		if _, err := ks.LoadCA(ctx, name); errors.Is(err, store.ErrNotFound) {
			act = ActionCreate
		} else if err != nil {
			return fmt.Errorf("CA %s: %w", name, err)
		} else if _, err := ks.LoadCACert(ctx, name); errors.Is(err, store.ErrNotFound) {
			// The certificate copy nodes read is missing (a creator
			// stopped half way); EnsureCA publishes it.
			act = ActionUpdate
		} else if err != nil {
			return fmt.Errorf("CA %s: %w", name, err)
		}
		if act != ActionUnchanged && !a.dryRun {
			if _, err := ks.EnsureCA(ctx, name, pki.CAOptions{}); err != nil {
				return fmt.Errorf("creating CA %s: %w", name, err)
			}
		}
		a.add(Change{Kind: KindCA, Name: name, URL: a.url(p.Cluster + "/pki/" + name), Action: act})
	}
	for _, name := range p.SigningKeys {
		_, err := ks.LoadSigningKey(ctx, name)
		exists := err == nil
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("signing key %s: %w", name, err)
		}
		if !exists && !a.dryRun {
			if _, err := ks.EnsureSigningKey(ctx, name); err != nil {
				return fmt.Errorf("creating signing key %s: %w", name, err)
			}
		}
		a.add(Change{Kind: KindSigningKey, Name: name, URL: a.url(p.Cluster + "/pki/" + name), Action: action(exists)})
	}
	_, err = bootstraptoken.Read(ctx, a.st, p.Cluster)
	exists := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if !exists && !a.dryRun {
		if _, _, err := bootstraptoken.Ensure(ctx, a.st, p.Cluster); err != nil {
			return err
		}
	}
	a.add(Change{Kind: KindBootstrapToken, Name: "node-bootstrap-token", URL: a.url(bootstraptoken.Key(p.Cluster)), Action: action(exists)})
	if p.GossipKeyring {
		kr := gossipkeys.ForCluster(a.st, p.Cluster)
		_, _, err := kr.Load(ctx)
		exists := err == nil
		if err != nil && !errors.Is(err, gossipkeys.ErrMissing) {
			return err
		}
		if !exists && !a.dryRun {
			if _, err := kr.Create(ctx, a.rand); err != nil {
				return err
			}
		}
		a.add(Change{Kind: KindGossipKeyring, Name: "gossip-keys", URL: kr.URL(), Action: action(exists)})
	}
	return nil
}

func action(exists bool) string {
	if exists {
		return ActionUnchanged
	}
	return ActionCreate
}

// specJSON is how the control area holds a spec (etcd-manager-ctl writes
// the same), for diffs.
func specJSON(s control.Spec) []byte {
	b, _ := json.MarshalIndent(s, "", "  ")
	return append(b, '\n')
}

func (a *applier) etcdSpec(ctx context.Context, e EtcdSpec) error {
	key := e.Layout.SpecKey()
	c := Change{Kind: KindEtcdSpec, Name: e.Layout.EtcdCluster, URL: a.url(key)}
	old, _, err := store.ReadAll(ctx, a.st, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		c.Action = ActionCreate
		old = nil
	case err != nil:
		return fmt.Errorf("reading etcd cluster spec: %w", err)
	default:
		var cur control.Spec
		dec := json.NewDecoder(bytes.NewReader(old))
		dec.DisallowUnknownFields()
		if dec.Decode(&cur) == nil && cur == e.Spec {
			c.Action = ActionUnchanged
			a.add(c)
			return nil
		}
		c.Action = ActionUpdate
	}
	c.Diff = textdiff.Unified(c.URL, old, specJSON(e.Spec))
	if !a.dryRun {
		if c.Action == ActionCreate {
			// Create-if-absent, as etcd-manager seeds it: a spec written
			// meanwhile by etcd-manager-ctl is not overwritten by a create.
			created, err := control.SeedSpec(ctx, a.st, e.Layout, e.Spec)
			if err != nil {
				return fmt.Errorf("etcd cluster %s: %w", e.Layout.EtcdCluster, err)
			}
			if !created {
				return fmt.Errorf("etcd cluster %s: a spec appeared at %s while rendering; run again to compare", e.Layout.EtcdCluster, c.URL)
			}
		} else if err := control.WriteSpec(ctx, a.st, e.Layout, e.Spec); err != nil {
			return fmt.Errorf("etcd cluster %s: %w", e.Layout.EtcdCluster, err)
		}
	}
	a.add(c)
	return nil
}

func (a *applier) nodeConfig(ctx context.Context, cluster string, g Group) error {
	key := config.NodeConfigKey(cluster, g.Name)
	c := Change{Kind: KindNodeConfig, Name: g.Name, URL: a.url(key)}
	old, info, err := store.ReadAll(ctx, a.st, key)
	cond := store.Condition{IfVersion: info.Version}
	switch {
	case errors.Is(err, store.ErrNotFound):
		c.Action, old, cond = ActionCreate, nil, store.Condition{IfAbsent: true}
	case err != nil:
		return fmt.Errorf("reading node configuration of group %s: %w", g.Name, err)
	case bytes.Equal(old, g.Data):
		c.Action = ActionUnchanged
		a.add(c)
		return nil
	default:
		c.Action = ActionUpdate
	}
	c.Diff = textdiff.Unified(c.URL, old, g.Data)
	if !a.dryRun {
		// Conditional on what was compared, so a concurrent edit is not
		// lost silently.
		if _, err := a.st.Put(ctx, key, bytes.NewReader(g.Data), cond); err != nil {
			if errors.Is(err, store.ErrPrecondition) {
				return fmt.Errorf("node configuration %s changed while rendering; run again: %w", c.URL, err)
			}
			return fmt.Errorf("writing node configuration of group %s: %w", g.Name, err)
		}
	}
	a.add(c)
	return nil
}

func defaultRand(r io.Reader) io.Reader {
	if r == nil {
		return rand.Reader
	}
	return r
}
