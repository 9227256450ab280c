// Package app is nodeup's command layer: the apply, status and
// bootstrap-script commands, the boot configuration they share, and the
// status file. It wires the state store, the model and the engine together;
// main only builds the cli.App.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/fsroot"
	"github.com/kopsnode/agents/nodeup/model"
	"github.com/kopsnode/agents/nodeup/state"
	"github.com/kopsnode/agents/nodeup/tasks"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/nodeaddr"
	"github.com/kopsnode/agents/pkg/pki"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/version"
	units "github.com/kopsnode/agents/systemd-units"
)

// StoreOpener opens the state store a boot configuration names.
type StoreOpener func(ctx context.Context, bc BootConfig) (store.Store, error)

// Options configure one apply run.
type Options struct {
	BootConfig
	DryRun bool
	// Out receives the plan (dry run) or the summary.
	Out io.Writer
	Log *slog.Logger
	// OpenStore opens the state store (required).
	OpenStore StoreOpener
	// Systemd overrides the systemd manager; nil means D-Bus when the root
	// is "/" and systemd is running, none otherwise.
	Systemd units.Manager
	// Exec overrides the command runner.
	Exec engine.Runner
	HTTP *http.Client
	// Hostname overrides the node name (default: <root>/etc/hostname, then
	// the kernel's).
	Hostname string
	// NodeAddress overrides the node's primary address (default: the
	// default route's source address); control-plane nodes need it.
	NodeAddress netip.Addr
	Engine      engine.Options
	// StoreTimeout bounds the retries of reading the configuration (default 5m).
	StoreTimeout time.Duration
	// AttemptTimeout bounds one asset download attempt (default 2m).
	AttemptTimeout time.Duration
	Now            func() time.Time
}

// HashMismatchError is a node configuration that differs from the pinned one.
type HashMismatchError struct {
	URL, Pinned, Actual string
}

func (e *HashMismatchError) Error() string {
	return fmt.Sprintf("node configuration %s has sha256 %s, but the boot configuration pins %s: refusing to apply it (allow with --follow-updates)", e.URL, e.Actual, e.Pinned)
}

// Apply converges the root to the node configuration in the store. It
// writes the status file (except in a dry run) also when it fails before
// running any task, so that `nodeup status` tells why.
func Apply(ctx context.Context, o Options) (*Status, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	st := &Status{Version: version.Version, Started: o.Now(), Store: o.Store, Cluster: o.Cluster, Group: o.Group, ConfigHash: o.ConfigHash}
	if err := o.BootConfig.Validate(); err != nil {
		return st, fmt.Errorf("%w: %w", err, errUsage)
	}
	root := o.Root
	if root == "" {
		root = "/"
	}
	f, err := fsroot.New(root)
	if err != nil {
		return st, err
	}
	err = apply(ctx, o, f, st)
	st.Finished = o.Now()
	st.Result = "converged"
	if err != nil {
		st.Result = "failed"
		st.Error = err.Error()
	}
	if !o.DryRun {
		if werr := WriteStatus(f, st); werr != nil {
			err = errors.Join(err, fmt.Errorf("writing status: %w", werr))
		}
	}
	return st, err
}

var errUsage = errors.New("invalid options")

func apply(ctx context.Context, o Options, f *fsroot.FS, st *Status) error {
	if o.OpenStore == nil {
		return errors.New("no state store opener")
	}
	s, err := o.OpenStore(ctx, o.BootConfig)
	if err != nil {
		return fmt.Errorf("opening state store %s: %w", o.Store, err)
	}
	defer s.Close()
	key := ConfigKey(o.Cluster, o.Group)
	url := store.JoinURL(s.URL(), key)
	data, err := readWithRetry(ctx, s, key, o)
	if err != nil {
		return err
	}
	actual := config.FileHash(data)
	st.ConfigHash = actual
	if o.ConfigHash != "" && !strings.EqualFold(o.ConfigHash, actual) {
		if !o.FollowUpdates {
			return &HashMismatchError{URL: url, Pinned: strings.ToLower(o.ConfigHash), Actual: actual}
		}
		o.Log.Info("node configuration changed since it was pinned; following updates", "url", url, "pinned", o.ConfigHash, "sha256", actual)
	}
	cfg, err := config.ParseNodeConfig(data, url)
	if err != nil {
		return err
	}
	if cfg.Spec.ClusterName != "" && cfg.Spec.ClusterName != o.Cluster {
		return fmt.Errorf("%s: spec.clusterName is %q, but this node belongs to cluster %q", url, cfg.Spec.ClusterName, o.Cluster)
	}
	ks, err := pki.NewKeystore(s, o.Cluster+"/pki", o.Log, o.Now)
	if err != nil {
		return err
	}
	host := o.Hostname
	if host == "" {
		host = hostname(f)
	}
	addr, err := nodeAddress(o, cfg)
	if err != nil {
		return err
	}
	g, err := model.Build(&model.Input{
		Config: cfg, StoreURL: o.Store, StoreEndpoint: o.StoreEndpoint, StoreRegion: o.StoreRegion, StorePathStyle: o.StorePathStyle, Group: o.Group, Hostname: host, Keystore: ks, Store: s, Cluster: o.Cluster,
		Now: o.Now, AssetDeadline: o.Engine.TaskTimeout, NodeAddress: addr,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	return run(ctx, o, f, g, st)
}

// nodeAddress is the address the control plane advertises: the option, or
// the default route's source address. Workers do not need one.
func nodeAddress(o Options, cfg *config.NodeConfig) (netip.Addr, error) {
	if o.NodeAddress.IsValid() || cfg.Spec.Role != config.RoleControlPlane {
		return o.NodeAddress, nil
	}
	ip, err := nodeaddr.Primary()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("finding the node address the API server advertises: %w", err)
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, fmt.Errorf("finding the node address the API server advertises: %v is not an IP address", ip)
	}
	return a.Unmap(), nil
}

// run executes the graph phase by phase; exported through RunGraph for
// benchmarks and tests that build their own graphs.
func run(ctx context.Context, o Options, f *fsroot.FS, g *engine.Graph, st *Status) error {
	sstate, err := state.Load(f)
	if err != nil {
		o.Log.Warn("state file unreadable; starting from an empty state", "error", err)
	}
	if !o.DryRun {
		// Before any task writes: an interrupted earlier run may have left
		// temporaries beside the files this run manages.
		removed, err := f.RemoveStaleTemps(model.ManagedPaths(g)...)
		if len(removed) > 0 {
			o.Log.Info("removed stale temporary files of an interrupted run", "paths", removed)
		}
		if err != nil {
			o.Log.Warn("removing stale temporary files", "error", err)
		}
	}
	env := &engine.Env{FS: f, State: sstate, Log: o.Log, HTTP: o.HTTP, Exec: o.Exec, AttemptTimeout: o.AttemptTimeout}
	if env.HTTP == nil {
		env.HTTP = tasks.DefaultHTTPClient()
	}
	if o.OpenStore != nil {
		env.OpenObject = func(ctx context.Context, u string) (io.ReadCloser, error) { return openObject(ctx, o, u) }
	}
	if env.Exec == nil {
		env.Exec = engine.ExecRunner{}
	}
	env.Systemd = o.Systemd
	if env.Systemd == nil && f.IsLive() && units.Booted() {
		d := units.NewDBus()
		defer d.Close()
		env.Systemd = d
	}
	phases := []engine.Phase{engine.PhaseBake, engine.PhaseBoot}
	switch o.Phase {
	case "bake":
		phases = phases[:1]
	case "boot":
		phases = phases[1:]
	}
	eopts := o.Engine
	eopts.DryRun = o.DryRun
	eopts.Log = o.Log
	if eopts.Now == nil {
		eopts.Now = o.Now
	}
	all := &engine.Report{Results: map[string]engine.Result{}}
	for _, p := range phases {
		start := o.Now()
		eopts.Phases = []engine.Phase{p}
		eopts.Prior = all
		rep, err := engine.Run(ctx, g, env, eopts)
		if err != nil && rep == nil {
			return err
		}
		pt := PhaseTiming{Phase: p, Started: start, Duration: o.Now().Sub(start)}
		for _, id := range rep.Order {
			r := rep.Results[id]
			all.Results[id] = r
			all.Order = append(all.Order, id)
			st.Tasks = append(st.Tasks, r)
			if r.Changed() {
				pt.Changed++
			}
			if r.Status == engine.StatusFailed || r.Status == engine.StatusSkipped {
				pt.Failed++
			}
		}
		st.Phases = append(st.Phases, pt)
		o.Log.Info("phase finished", "phase", p, "duration", pt.Duration, "changed", pt.Changed, "failed", pt.Failed)
		if err != nil {
			return err
		}
	}
	if !o.DryRun {
		if err := sstate.Save(); err != nil {
			return err
		}
	}
	if o.DryRun {
		all.WritePlan(o.Out)
	} else {
		for _, id := range all.Changed() {
			fmt.Fprintf(o.Out, "changed %s\n", id)
		}
	}
	return all.Err()
}

// RunGraph runs a prebuilt graph on a root with the run options (for tests
// and benchmarks that do not go through the store).
func RunGraph(ctx context.Context, o Options, g *engine.Graph) (*Status, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	root := o.Root
	if root == "" {
		root = "/"
	}
	f, err := fsroot.New(root)
	if err != nil {
		return nil, err
	}
	st := &Status{Started: o.Now()}
	err = run(ctx, o, f, g, st)
	st.Finished = o.Now()
	return st, err
}

func readWithRetry(ctx context.Context, s store.Store, key string, o Options) ([]byte, error) {
	timeout := o.StoreTimeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	delay := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		b, _, err := store.ReadAll(rctx, s, key)
		if err == nil {
			return b, nil
		}
		// Absent or forbidden will not get better by waiting.
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrAccessDenied) || errors.Is(err, store.ErrNoBucket) {
			return nil, fmt.Errorf("reading node configuration: %w", err)
		}
		o.Log.Warn("reading node configuration failed; retrying", "url", store.JoinURL(s.URL(), key), "attempt", attempt, "error", err)
		t := time.NewTimer(delay)
		select {
		case <-rctx.Done():
			t.Stop()
			return nil, fmt.Errorf("reading node configuration (gave up after %d attempts): %w", attempt, err)
		case <-t.C:
		}
		delay = min(delay*2, 10*time.Second)
	}
}

func hostname(f *fsroot.FS) string {
	if !f.IsLive() {
		if b, err := f.ReadFile("/etc/hostname"); err == nil && strings.TrimSpace(string(b)) != "" {
			return strings.TrimSpace(string(b))
		}
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return strings.ToLower(h)
}

// openObject reads s3://bucket/key or gs://bucket/key with the run's store
// settings (endpoint, region, credentials from the environment).
func openObject(ctx context.Context, o Options, u string) (io.ReadCloser, error) {
	scheme, rest, _ := strings.Cut(u, "://")
	bucket, key, ok := strings.Cut(rest, "/")
	if !ok || bucket == "" || key == "" {
		return nil, fmt.Errorf("%s: want %s://bucket/key", u, scheme)
	}
	bc := o.BootConfig
	bc.Store = scheme + "://" + bucket
	s, err := o.OpenStore(ctx, bc)
	if err != nil {
		return nil, err
	}
	rc, _, err := s.Open(ctx, key)
	if err != nil {
		s.Close()
		return nil, err
	}
	return &closeBoth{ReadCloser: rc, s: s}, nil
}

type closeBoth struct {
	io.ReadCloser
	s store.Store
}

func (c *closeBoth) Close() error {
	err := c.ReadCloser.Close()
	c.s.Close()
	return err
}
