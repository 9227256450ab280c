// Package render turns a cluster spec (cluster.yaml) into everything the
// machines need in the state store: a node configuration per instance group
// with every asset pinned by sha256 from the version table (package
// releases) and the release mirror, the CAs, the service-account signing
// key, the node bootstrap token, the gossip keyring and each etcd cluster's
// spec. It is `nodeup render`'s logic: BuildPlan is pure, Run fetches the
// mirror's hashes and applies the plan, writing only what differs, or in a
// dry run reports the diff. docs/cluster-render.md describes it.
package render

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/releases"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/version"
)

// DefaultMirrorTimeout bounds each request to the mirror.
const DefaultMirrorTimeout = 30 * time.Second

// Options configure Run.
type Options struct {
	// ClusterData is the cluster spec document; Source names it in errors
	// (the file name).
	ClusterData []byte
	Source      string
	Store       store.Store
	// DryRun writes nothing and reports the changes with diffs.
	DryRun bool
	// Table is the version table (default releases.Table()).
	Table []releases.Release
	// KopsnodeVersion is the default of spec.assets.nodeupVersion (default
	// the running binary's version).
	KopsnodeVersion string
	// HTTPClient fetches the mirror's hashes (default: one with
	// DefaultMirrorTimeout per request).
	HTTPClient *http.Client
	Log        *slog.Logger
	Now        func() time.Time
	// Rand supplies the gossip key (default crypto/rand).
	Rand io.Reader
}

// GroupResult is one instance group's node configuration in the store and
// the hash its userdata pins.
type GroupResult struct {
	Name       string      `json:"name"`
	Role       config.Role `json:"role"`
	ConfigURL  string      `json:"configURL"`
	ConfigHash string      `json:"configHash"`
}

// Result is what Run did (or would do).
type Result struct {
	Cluster string `json:"cluster"`
	Store   string `json:"store"`
	DryRun  bool   `json:"dryRun"`
	// Kubernetes is the release rendered; KopsnodeVersion the nodeup,
	// protokube and etcd-manager release.
	Kubernetes      string        `json:"kubernetesVersion"`
	KopsnodeVersion string        `json:"kopsnodeVersion"`
	Groups          []GroupResult `json:"groups"`
	Nodeup          Pinned        `json:"nodeup"`
	Changes         []Change      `json:"changes"`
}

// Changed counts the changes that write (or would write).
func (r *Result) Changed() int {
	n := 0
	for _, c := range r.Changes {
		if c.Action != ActionUnchanged {
			n++
		}
	}
	return n
}

// Human writes the result for an operator: one line per change, the diffs
// of node configurations and etcd specs, and each group's pinned hash.
func (r *Result) Human(w io.Writer) error {
	var b strings.Builder
	verb := map[string]string{ActionCreate: "created", ActionUpdate: "updated", ActionUnchanged: "unchanged"}
	if r.DryRun {
		verb = map[string]string{ActionCreate: "would create", ActionUpdate: "would update", ActionUnchanged: "unchanged"}
	}
	for _, c := range r.Changes {
		what := map[string]string{KindCA: "CA", KindSigningKey: "signing key", KindBootstrapToken: "bootstrap token",
			KindGossipKeyring: "gossip keyring", KindEtcdSpec: "etcd cluster spec", KindNodeConfig: "node configuration"}[c.Kind]
		fmt.Fprintf(&b, "%s %s %s (%s)\n", verb[c.Action], what, c.Name, c.URL)
		if c.Diff != "" && r.DryRun {
			b.WriteString(c.Diff)
		}
	}
	fmt.Fprintf(&b, "cluster %s: Kubernetes %s, kopsnode %s; %d of %d store objects %s\n", r.Cluster, r.Kubernetes, r.KopsnodeVersion,
		r.Changed(), len(r.Changes), map[bool]string{true: "would change", false: "changed"}[r.DryRun])
	for _, g := range r.Groups {
		fmt.Fprintf(&b, "group %s (%s): config hash %s\n", g.Name, g.Role, g.ConfigHash)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Run parses and validates the cluster spec, looks its Kubernetes version
// up in the version table, fetches every asset's sha256 from the mirror,
// builds the plan and writes into the store what differs from it (nothing
// in a dry run). Every error a user can cause names the file and field, the
// URL or the store object.
func Run(ctx context.Context, o Options) (*Result, *Plan, error) {
	if o.Store == nil {
		return nil, nil, errors.New("render: no state store")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Table == nil {
		o.Table = releases.Table()
	}
	if o.KopsnodeVersion == "" {
		o.KopsnodeVersion = version.Version
	}
	if o.HTTPClient == nil {
		// A mirror that stops answering fails the run instead of hanging it.
		o.HTTPClient = &http.Client{Timeout: DefaultMirrorTimeout}
	}
	c, in, err := Prepare(o.ClusterData, o.Source, o.Table, o.KopsnodeVersion)
	if err != nil {
		return nil, nil, err
	}
	sums, err := FetchHashes(ctx, o.HTTPClient, in.Mirror, append(in.Files, releases.NodeupFile(in.KopsnodeVersion)))
	if err != nil {
		return nil, nil, err
	}
	in.SHA256 = sums
	p, err := BuildPlan(c, in)
	if err != nil {
		return nil, nil, err
	}
	a := &applier{st: o.Store, dryRun: o.DryRun, log: o.Log, now: o.Now, rand: defaultRand(o.Rand)}
	if err := a.apply(ctx, p); err != nil {
		return nil, nil, err
	}
	res := &Result{Cluster: p.Cluster, Store: o.Store.URL(), DryRun: o.DryRun, Kubernetes: in.Release.Kubernetes,
		KopsnodeVersion: in.KopsnodeVersion, Nodeup: p.Nodeup, Changes: a.out}
	for _, g := range p.Groups {
		res.Groups = append(res.Groups, GroupResult{Name: g.Name, Role: g.Role,
			ConfigURL: store.JoinURL(o.Store.URL(), config.NodeConfigKey(p.Cluster, g.Name)), ConfigHash: g.Hash})
	}
	return res, p, nil
}

// Prepare parses, defaults and validates the cluster spec and resolves the
// choices the version table makes: the release, the files, the mirror, the
// kopsnode version and the sandbox image. It does no I/O.
func Prepare(data []byte, source string, table []releases.Release, kopsnodeVersion string) (*config.Cluster, Inputs, error) {
	c, err := config.ParseCluster(data, source)
	if err != nil {
		return nil, Inputs{}, err
	}
	// The spec as written, before defaults: what the operator chose
	// rather than left to the table.
	raw, err := config.DecodeCluster(data, source)
	if err != nil {
		return nil, Inputs{}, err
	}
	a := c.Spec.Assets
	if a == nil || a.Mirror == "" {
		return nil, Inputs{}, fieldError(source, "spec.assets.mirror", "required by nodeup render: the base URL of the release mirror the nodes download from")
	}
	rel, err := releases.Lookup(table, c.Spec.KubernetesVersion)
	if err != nil {
		return nil, Inputs{}, fieldError(source, "spec.kubernetesVersion", "%v", err)
	}
	if v := raw.Spec.ContainerRuntime.Version; v != "" && v != rel.Containerd {
		return nil, Inputs{}, fieldError(source, "spec.containerRuntime.version", "%q differs from containerd %s, which the version table pins for Kubernetes %s (leave it out)", v, rel.Containerd, rel.Kubernetes)
	}
	in := Inputs{Source: source, Release: rel, Mirror: strings.TrimSuffix(a.Mirror, "/"), KopsnodeVersion: kopsnodeVersion,
		SandboxImage: raw.Spec.ContainerRuntime.SandboxImage}
	if a.NodeupVersion != "" {
		in.KopsnodeVersion = a.NodeupVersion
	}
	if in.Files, err = FilesFor(c, source, rel, in.KopsnodeVersion); err != nil {
		return nil, Inputs{}, err
	}
	return c, in, nil
}
