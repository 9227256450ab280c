// Package model turns a node configuration into nodeup's task graph. Each
// builder owns a set of outputs (file paths and units); a second builder
// writing the same output is an error found when the graph is built, not a
// fight on the node. Builders are pure: they read the configuration and
// return tasks; nothing here touches the machine.
package model

import (
	"fmt"
	"io/fs"
	"net/netip"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/fsroot"
	"github.com/kopsnode/agents/nodeup/tasks"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/pki"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/storeurl"
	units "github.com/kopsnode/agents/systemd-units"
)

// Input is everything the builders read.
type Input struct {
	Config *config.NodeConfig
	// StoreURL, Cluster and Group identify the node's configuration; the
	// agents' units are given them.
	StoreURL string
	// StoreEndpoint, StoreRegion and StorePathStyle are the store settings
	// its URL does not carry (from the boot configuration). Every daemon's
	// unit gets them with the URL, through StoreSettings.
	StoreEndpoint  string
	StoreRegion    string
	StorePathStyle bool
	Group          string
	// Hostname names the node (the kubelet's client certificate CN).
	Hostname string
	// Keystore issues the kubelet's client certificate; nil makes the
	// kubeconfig task fail with a clear error when it has to issue one.
	Keystore *pki.Keystore
	// Store is the state store, for the node bootstrap token; Cluster
	// names the cluster in it (default: spec.clusterName).
	Store   store.Store
	Cluster string
	// NodeAddress is the node's primary address: control-plane nodes
	// advertise the API server on it and name it in its certificate.
	NodeAddress netip.Addr
	// BootConfig is the boot configuration path nodeup.service reads.
	BootConfig string
	Now        func() time.Time
	// AssetDeadline bounds every asset's download attempts (0: engine default).
	AssetDeadline time.Duration
}

// StoreSettings are the complete store settings that daemons' units are
// given (storeurl.Settings.Args renders their flags), so every daemon opens
// the store the way nodeup did.
func (in *Input) StoreSettings() storeurl.Settings {
	return storeurl.Settings{URL: in.StoreURL, Endpoint: in.StoreEndpoint, Region: in.StoreRegion, PathStyle: in.StorePathStyle}
}

func (in *Input) cluster() string {
	if in.Cluster != "" {
		return in.Cluster
	}
	return in.Config.Spec.ClusterName
}

// Builder produces the tasks of one concern.
type Builder interface {
	Name() string
	Build(in *Input, c *Collector) error
}

// Builders returns the builders for a configuration, in a fixed order.
func Builders() []Builder {
	return []Builder{
		packagesBuilder{},
		kernelBuilder{},
		containerdBuilder{},
		kubeletBuilder{},
		kubeProxyBuilder{},
		imagesBuilder{},
		cniBuilder{},
		protokubeBuilder{},
		manifestsBuilder{},
		etcdBinariesBuilder{},
		etcdManagerBuilder{},
		controlPlaneBuilder{},
		nodeupBuilder{},
	}
}

// Collector adds tasks to a graph on behalf of a builder, enforcing one
// owner per output.
type Collector struct {
	g        *engine.Graph
	owner    string
	outputs  map[string]string // output -> owner
	assets   map[string]*tasks.Asset
	cfg      *config.NodeConfig
	deadline time.Duration
}

// Add adds a task; its outputs (paths, units) must not have another owner.
func (c *Collector) Add(t engine.Task) error {
	for _, o := range Outputs(t) {
		if prev, ok := c.outputs[o]; ok {
			return fmt.Errorf("%s is written by two builders: %s and %s", o, prev, c.owner)
		}
		c.outputs[o] = c.owner
	}
	return c.g.Add(c.owner, t)
}

// Asset returns the asset task for a named asset of the configuration,
// adding it to the graph on first use (assets are shared by name: the cni
// and containerd builders may both use one).
func (c *Collector) Asset(name string) (*tasks.Asset, error) {
	if a, ok := c.assets[name]; ok {
		return a, nil
	}
	for _, a := range c.cfg.Spec.Assets {
		if a.Name == name {
			t := &tasks.Asset{Name: a.Name, SHA256: strings.ToLower(a.SHA256), URLs: a.URLs, Extract: a.Extract, Deadline: c.deadline}
			if err := c.g.Add("assets", t); err != nil {
				return nil, err
			}
			c.assets[name] = t
			return t, nil
		}
	}
	return nil, fmt.Errorf("spec.assets: no asset named %q (needed by the %s builder)", name, c.owner)
}

// Outputs returns what a task writes, for the one-owner rule.
func Outputs(t engine.Task) []string {
	// Tasks that write several files name them all.
	if o, ok := t.(interface{ Outputs() []string }); ok {
		return o.Outputs()
	}
	switch t := t.(type) {
	case *tasks.File:
		return []string{t.Path}
	case *tasks.Install:
		return []string{t.Path}
	case *tasks.Kubeconfig:
		return []string{t.Path}
	case *tasks.BootstrapKubeconfig:
		return []string{t.Path}
	case *tasks.CACertFile:
		return []string{t.Path}
	case *tasks.Sysctl:
		return []string{t.Path}
	case *tasks.KernelModules:
		return []string{t.Path}
	case *tasks.Symlink:
		return []string{t.Path}
	case *tasks.Directory:
		return []string{t.Path}
	case *tasks.ManagedBlock:
		return []string{t.Path + "#" + t.Name}
	case *tasks.Service:
		out := []string{path.Join(units.Dir, t.Name), "unit " + t.Name}
		for _, l := range units.EnableLinks(t.Name, t.Content) {
			out = append(out, l.Path)
		}
		return out
	case *tasks.Packages:
		return []string{"packages"}
	}
	return []string{t.ID()}
}

// ManagedPaths returns the absolute paths the graph's tasks write (files,
// binaries, units, enable links), sorted: the paths whose stale temporaries
// a run removes before it writes.
func ManagedPaths(g *engine.Graph) []string {
	seen := map[string]bool{}
	for _, id := range g.IDs() {
		t, _ := g.Get(id)
		for _, o := range Outputs(t) {
			if p, _, _ := strings.Cut(o, "#"); strings.HasPrefix(p, "/") {
				seen[p] = true
			}
		}
		if a, ok := t.(*tasks.Asset); ok {
			// The download, and the directory an archive is extracted to.
			seen[path.Join(tasks.CacheDir, a.SHA256)] = true
			seen[a.CachePath()] = true
		}
	}
	return sortedKeys(seen)
}

// Build runs every builder and returns the validated graph.
func Build(in *Input) (*engine.Graph, error) {
	return BuildWith(in, Builders())
}

// BuildWith runs the given builders.
func BuildWith(in *Input, builders []Builder) (*engine.Graph, error) {
	if in.Config == nil {
		return nil, fmt.Errorf("no node configuration")
	}
	g := engine.NewGraph()
	outputs := map[string]string{}
	assets := map[string]*tasks.Asset{}
	for _, b := range builders {
		c := &Collector{g: g, owner: b.Name(), outputs: outputs, assets: assets, cfg: in.Config, deadline: in.AssetDeadline}
		if err := b.Build(in, c); err != nil {
			return nil, fmt.Errorf("building %s tasks: %w", b.Name(), err)
		}
	}
	if err := g.Validate(); err != nil {
		return nil, err
	}
	return g, nil
}

func file(p string, content string, mode fs.FileMode, needs ...string) *tasks.File {
	return &tasks.File{Path: p, Content: []byte(content), Mode: mode, Owner: fsroot.RootOwner, Needs: needs}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// service builds a Service task whose inputs are tasks of the graph.
func service(u units.Unit, inputs []string, extraNeeds ...string) *tasks.Service {
	needs := append([]string(nil), extraNeeds...)
	for _, in := range inputs {
		needs = append(needs, tasks.FileID(in))
	}
	sort.Strings(needs)
	return &tasks.Service{Name: u.Name, Content: u.Render(), Inputs: inputs, Needs: needs}
}
