package podnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kopsnode/agents/cni"
	"github.com/kopsnode/agents/gossip/records"
	"github.com/kopsnode/agents/pkg/pki"
)

// Deps are the controller's parts; nil effects select the real ones.
type Deps struct {
	// Table is the gossip record table: the controller publishes its range
	// there and reads the others'.
	Table *records.Table
	// Addr is this node's address, the next hop it publishes.
	Addr netip.Addr
	// Nodes reads this node's range (KubeNode from Config when nil).
	Nodes NodeSource
	// Routes is the routing table (Netlink when nil).
	Routes RouteTable
	// Masq keeps the masquerade rules (iptables when nil).
	Masq Masquerader
	// WriteFile writes the CNI configuration atomically
	// (pki.WriteFileAtomic when nil).
	WriteFile func(path string, data []byte, perm os.FileMode) error
	// Registerer receives the metrics; nil for none.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Controller keeps the node's pod network converged.
type Controller struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	cluster netip.Prefix
	nonMasq netip.Prefix
	confDst string

	routesGauge prometheus.Gauge
	errsTotal   *prometheus.CounterVec

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	mu sync.Mutex // guards st
	st Status
}

// failingMasq stands in for iptables when the command is missing.
type failingMasq struct{ err error }

func (f failingMasq) Ensure(context.Context, netip.Prefix, netip.Prefix) error { return f.err }

// Status is what the controller last did, for /status and `protokube status`.
type Status struct {
	Node string `json:"node"`
	// Range is the node's pod range; empty while unknown.
	Range string `json:"range,omitempty"`
	Via   string `json:"via"`
	// CNIConfig is the configuration file, once written.
	CNIConfig string    `json:"cniConfig,omitempty"`
	Routes    []Route   `json:"routes"`
	Skipped   []Skipped `json:"skipped,omitempty"`
	// Syncs counts completed route passes.
	Syncs    int       `json:"syncs"`
	LastSync time.Time `json:"lastSync"`
	// Errors of the latest attempt, by part: node, cni, record, routes,
	// masquerade. "node" while the range is not allocated is waiting, not
	// failing.
	Errors map[string]string `json:"errors,omitempty"`
}

// Start checks the configuration and starts the controller. The first pass
// runs before Start returns, so its errors are logged at once.
func Start(ctx context.Context, cfg Config, deps Deps) (*Controller, error) {
	if cfg.Mode != ModeKubenet {
		return nil, fmt.Errorf("podnet: mode %q is not %q", cfg.Mode, ModeKubenet)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Table == nil || !deps.Addr.IsValid() {
		return nil, errors.New("podnet: the record table and this node's address are required")
	}
	if cfg.NodeName == "" {
		cfg.NodeName = deps.Table.NodeName()
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Nodes == nil {
		deps.Nodes = KubeNode{Kubeconfig: cfg.Kubeconfig, Name: cfg.NodeName}
	}
	if deps.Routes == nil {
		deps.Routes = Netlink{}
	}
	if deps.Masq == nil {
		ipt, err := NewIPTables()
		if err != nil {
			// Routes, the CNI configuration and gossip (the node's
			// discovery) still work without iptables: run degraded, with
			// the cause in every pass's masquerade error and in /healthz.
			deps.Masq = failingMasq{err}
		} else {
			deps.Masq = ipt
		}
	}
	if deps.WriteFile == nil {
		deps.WriteFile = pki.WriteFileAtomic
	}
	c := &Controller{
		cfg:     cfg,
		deps:    deps,
		log:     deps.Logger,
		cluster: netip.MustParsePrefix(cfg.ClusterCIDR),
		nonMasq: netip.MustParsePrefix(cfg.NonMasqueradeCIDR),
		confDst: filepath.Join(cfg.CNIConfDir, filepath.Base(cni.KubenetConfigPath)),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		st:      Status{Node: cfg.NodeName, Via: deps.Addr.String(), Routes: []Route{}},
		routesGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kopsnode_podnet_routes",
			Help: "Routes to other nodes' pod ranges installed by protokube.",
		}),
		errsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kopsnode_podnet_errors_total",
			Help: "Failed pod network actions, by part (node, cni, record, routes, masquerade).",
		}, []string{"part"}),
	}
	if deps.Registerer != nil {
		for _, m := range []prometheus.Collector{c.routesGauge, c.errsTotal} {
			if err := deps.Registerer.Register(m); err != nil {
				return nil, fmt.Errorf("podnet metrics: %w", err)
			}
		}
	}
	ch, unsubscribe := deps.Table.Subscribe()
	c.pass(ctx, true)
	go c.loop(ch, unsubscribe)
	c.log.Info("pod network started", "mode", cfg.Mode, "node", cfg.NodeName, "via", deps.Addr, "clusterCIDR", c.cluster, "nonMasqueradeCIDR", c.nonMasq, "source", deps.Nodes.String())
	return c, nil
}

func (c *Controller) loop(changes <-chan struct{}, unsubscribe func()) {
	defer close(c.done)
	defer unsubscribe()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	// While the range is unknown the Node is asked more often than Resync,
	// so a node's pods start soon after the controller manager allocates.
	poll := min(c.cfg.Resync, 2*time.Second)
	resync := time.NewTimer(poll)
	defer resync.Stop()
	for {
		full := false
		select {
		case <-c.stop:
			return
		case <-changes:
			// Coalesce bursts (a join delivers many records at once).
			select {
			case <-c.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		case <-resync.C:
			full = true
		}
		c.pass(ctx, full)
		if full {
			if c.rangeKnown() {
				resync.Reset(c.cfg.Resync)
			} else {
				resync.Reset(poll)
			}
		}
	}
}

func (c *Controller) rangeKnown() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st.Range != ""
}

// pass converges once. A full pass also reads the Node and checks the
// masquerade rules; a pass triggered by a record change only routes.
func (c *Controller) pass(ctx context.Context, full bool) {
	c.mu.Lock()
	prev := c.st
	c.mu.Unlock()
	errs := map[string]string{}
	for k, v := range prev.Errors {
		errs[k] = v // a partial pass keeps what it did not retry
	}
	fail := func(part string, err error) {
		if errs[part] != err.Error() {
			c.log.Warn("pod network", "part", part, "err", err)
		}
		errs[part] = err.Error()
		c.errsTotal.WithLabelValues(part).Inc()
	}
	ok := func(part string) { delete(errs, part) }

	own, _ := netip.ParsePrefix(prev.Range)
	cniPath := prev.CNIConfig
	// Only full passes ask the API server (every 2 s while the range is
	// unknown, every Resync after); record changes, which come in bursts
	// when nodes join, only re-route.
	if full {
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		got, err := c.deps.Nodes.PodCIDR(ctx)
		cancel()
		switch {
		case errors.Is(err, ErrNoPodCIDR):
			// Waiting is normal at boot; say why, once per cause.
			if errs["node"] != err.Error() {
				c.log.Info("waiting for this node's pod range", "reason", err)
			}
			errs["node"] = err.Error()
		case err != nil:
			fail("node", err)
		case !prefixContains(c.cluster, got):
			fail("node", fmt.Errorf("Node %s has spec.podCIDR %s, outside the cluster's pod range %s (--cluster-pod-cidr)", c.cfg.NodeName, got, c.cluster))
		default:
			ok("node")
			if got != own {
				c.log.Info("this node's pod range", "range", got, "previous", own)
			}
			own = got
		}
	}
	if own.IsValid() {
		if p, err := c.writeCNI(own); err != nil {
			fail("cni", err)
		} else {
			ok("cni")
			cniPath = p
		}
		if err := c.deps.Table.Put(RecordKey, PodRange{CIDR: own, Via: c.deps.Addr}.Encode()); err != nil {
			fail("record", err)
		} else {
			ok("record")
		}
	}
	if full {
		if err := c.deps.Masq.Ensure(ctx, c.cluster, c.nonMasq); err != nil {
			fail("masquerade", err)
		} else {
			ok("masquerade")
		}
	}
	self := Self{Name: c.deps.Table.NodeName(), Addr: c.deps.Addr, Range: own, Cluster: c.cluster}
	want, skipped := DesiredRoutes(self, c.deps.Table.All())
	for _, s := range skipped {
		if !containsSkip(prev.Skipped, s) {
			c.log.Warn("not routing a pod range record", "owner", s.Owner, "value", s.Value, "reason", s.Reason)
		}
	}
	installed, err := c.applyRoutes(ctx, want)
	if err != nil {
		fail("routes", err)
	} else {
		ok("routes")
	}
	c.routesGauge.Set(float64(len(installed)))

	c.mu.Lock()
	c.st.CNIConfig = cniPath
	if own.IsValid() {
		c.st.Range = own.String()
	}
	c.st.Routes = installed
	c.st.Skipped = skipped
	c.st.Syncs++
	c.st.LastSync = time.Now()
	c.st.Errors = errs
	if len(errs) == 0 {
		c.st.Errors = nil
	}
	c.mu.Unlock()
}

func containsSkip(list []Skipped, s Skipped) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// writeCNI writes the node's kubenet configuration when its content differs.
func (c *Controller) writeCNI(own netip.Prefix) (string, error) {
	f, err := cni.KubenetConfig(own, c.cfg.MTU)
	if err != nil {
		return "", err
	}
	if cur, err := os.ReadFile(c.confDst); err == nil && string(cur) == string(f.Content) {
		return c.confDst, nil
	}
	if err := c.deps.WriteFile(c.confDst, f.Content, 0o644); err != nil {
		return "", err
	}
	c.log.Info("wrote the CNI configuration", "path", c.confDst, "range", own)
	return c.confDst, nil
}

// applyRoutes converges the owned routes to want and returns what is
// installed afterwards (read back, so status never claims a route that
// failed). Every change is tried; the errors are joined.
func (c *Controller) applyRoutes(ctx context.Context, want []Route) ([]Route, error) {
	have, err := c.deps.Routes.List(ctx)
	if err != nil {
		return []Route{}, err
	}
	replace, remove := Diff(have, want)
	var errs []error
	for _, r := range remove {
		if err := c.deps.Routes.Delete(ctx, r); err != nil {
			errs = append(errs, err)
			continue
		}
		c.log.Info("withdrew a pod route", "route", r.String())
	}
	for _, r := range replace {
		if err := c.deps.Routes.Replace(ctx, r); err != nil {
			errs = append(errs, err)
			continue
		}
		c.log.Info("installed a pod route", "route", r.String(), "node", r.Owner)
	}
	if len(replace)+len(remove) > 0 {
		if have, err = c.deps.Routes.List(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	owners := map[netip.Prefix]string{}
	for _, r := range want {
		owners[r.Dst] = r.Owner
	}
	out := make([]Route, 0, len(have))
	for _, r := range have {
		r.Owner = owners[r.Dst]
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

// Status returns what the controller last did.
func (c *Controller) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.st
	s.Routes = append([]Route{}, c.st.Routes...)
	s.Skipped = append([]Skipped(nil), c.st.Skipped...)
	if c.st.Errors != nil {
		s.Errors = map[string]string{}
		for k, v := range c.st.Errors {
			s.Errors[k] = v
		}
	}
	return s
}

// Health is an error when routes, masquerade rules, the CNI configuration
// or the record failed in the latest pass. Waiting for the Node's range is
// not a failure.
func (c *Controller) Health() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, part := range []string{"cni", "record", "routes", "masquerade"} {
		if e, ok := c.st.Errors[part]; ok {
			errs = append(errs, fmt.Errorf("pod network %s: %s", part, e))
		}
	}
	return errors.Join(errs...)
}

// Close stops the loop and waits for it. Routes, rules and the CNI
// configuration stay: a restarted protokube takes them over, and pods keep
// their network meanwhile. Safe to call twice.
func (c *Controller) Close() error {
	c.closeOnce.Do(func() { close(c.stop) })
	<-c.done
	return nil
}
