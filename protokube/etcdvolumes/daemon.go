package etcdvolumes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/observe"
	"github.com/kopsnode/agents/pkg/store"
	units "github.com/kopsnode/agents/systemd-units"
	"github.com/kopsnode/agents/volumes"
	"github.com/kopsnode/agents/volumes/format"
	"github.com/kopsnode/agents/volumes/metal"
	"github.com/kopsnode/agents/volumes/mount"
	"github.com/kopsnode/agents/volumes/slots"
)

// Deps are the parts a Reconciler drives; nil fields get the real ones.
type Deps struct {
	Logger *slog.Logger
	// Manager starts the etcd-manager units. Nil: systemd over D-Bus,
	// closed by Daemon.Close.
	Manager units.Manager
	// Provider lists and attaches the volumes. Nil: the provider the node
	// configuration's spec.volume names, with its settings.
	Provider volumes.Provider
	// Store holds the member slot leases. Nil: opened from Config.Store,
	// closed by Close.
	Store store.Store
	// Machine is this machine's name in the slot leases. Empty: the host
	// name.
	Machine string
	// Registry receives the metrics. Nil: a new one.
	Registry *prometheus.Registry
	// Now is the clock for backoff and status times; nil: time.Now.
	Now func() time.Time
}

// Status is the document printed by --once and served at /status.
type Status struct {
	Cluster string `json:"cluster"`
	// Machine is this machine's name in the slot leases.
	Machine  string `json:"machine"`
	Provider string `json:"provider"`
	// Ready: every member's volume is mounted and its unit active or started.
	Ready        bool           `json:"ready"`
	EtcdClusters []MemberStatus `json:"etcdClusters"`
}

// MemberStatus is the state of one etcd member on this node.
type MemberStatus struct {
	EtcdCluster string `json:"etcdCluster"`
	// Slot is the member slot this machine holds: the etcd member name.
	Slot    string `json:"slot,omitempty"`
	Volume  string `json:"volume,omitempty"`
	Target  string `json:"target"`
	Unit    string `json:"unit"`
	Device  string `json:"device,omitempty"`
	Mounted bool   `json:"mounted"`
	// FormattedAt is when the volume was formatted (from its identity file).
	FormattedAt string `json:"formattedAt,omitempty"`
	UnitState   string `json:"unitState,omitempty"`
	// Starts counts the unit starts this process asked systemd for.
	Starts int  `json:"starts"`
	Ready  bool `json:"ready"`
	// Error is the last attempt's error; Refused says the volume was
	// refused (not blank, another member's, ambiguous, target busy) and
	// needs an operator, though it is still retried.
	Error       string     `json:"error,omitempty"`
	Refused     bool       `json:"refused,omitempty"`
	Failures    int        `json:"failures,omitempty"`
	LastAttempt time.Time  `json:"lastAttempt,omitzero"`
	NextAttempt *time.Time `json:"nextAttempt,omitempty"`
}

type member struct {
	name   string
	acq    *slots.Acquirer
	target string
	unit   string
	// sel and vol are the slot and volume once mounted; later passes
	// check the mount and renew the lease without choosing again. Only
	// the goroutine reconciling the member touches them.
	sel  volumes.Selector
	vol  *volumes.Volume
	st   MemberStatus // guarded by Reconciler.mu
	next time.Time    // guarded by Reconciler.mu
}

// Reconciler mounts each member's volume and starts its unit. Pass is safe
// to call from one goroutine at a time; Status from any.
type Reconciler struct {
	cfg      Config
	cluster  string
	machine  string
	provider string
	hint     func(etcdCluster string) string
	log      *slog.Logger
	mgr      units.Manager
	prov     volumes.Provider
	now      func() time.Time
	members  []*member

	mu sync.Mutex

	ready    *prometheus.GaugeVec
	failures *prometheus.CounterVec
	starts   *prometheus.CounterVec
}

// NewReconciler checks the configuration and prepares one member per etcd
// cluster of the node configuration. deps.Manager and deps.Store must be
// set.
func NewReconciler(ctx context.Context, cfg Config, node *config.NodeConfig, deps Deps) (*Reconciler, error) {
	if deps.Manager == nil {
		return nil, errors.New("etcd volumes: no systemd manager")
	}
	if deps.Store == nil {
		return nil, errors.New("etcd volumes: no state store")
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	machine := deps.Machine
	if machine == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("naming this machine in the slot leases: the host name is unknown: %w", err)
		}
		machine = h
	}
	spec := node.Spec
	kind := config.VolumeProviderMetal
	if spec.Volume != nil && spec.Volume.Provider != "" {
		kind = spec.Volume.Provider
	}
	prov := deps.Provider
	hint := func(string) string { return "" }
	switch kind {
	case config.VolumeProviderMetal:
		mc := metal.ConfigFromNode(spec)
		if prov == nil {
			p, err := metal.New(mc, log)
			if err != nil {
				return nil, fmt.Errorf("%s: spec.volume: %w", cfg.ConfigFile, err)
			}
			prov = p
		}
		hint = func(etcdCluster string) string {
			i := slices.IndexFunc(spec.EtcdClusters, func(e config.EtcdClusterSpec) bool { return e.Name == etcdCluster })
			if c, ok := mc.Disks[etcdCluster]; ok {
				return fmt.Sprintf("the disk chosen by spec.etcdClusters[%d].volume (%s) was not found on this machine", i, c)
			}
			return fmt.Sprintf("set spec.etcdClusters[%d].volume.device, .partitionLabel or .serials in the node configuration to the disk for this etcd cluster's member volume (it is formatted only when blank), or attach a disk already formatted for it", i)
		}
	default:
		if prov == nil {
			p, err := newCloudProvider(ctx, kind, spec, log)
			if err != nil {
				return nil, fmt.Errorf("%s: spec.volume: %w", cfg.ConfigFile, err)
			}
			prov = p
		}
	}
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	reg := deps.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	r := &Reconciler{
		cfg: cfg, cluster: spec.ClusterName, machine: machine, provider: kind, hint: hint, log: log, mgr: deps.Manager, prov: prov, now: now,
		ready: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "protokube_etcd_volume_ready",
			Help: "1 when the etcd member's volume is mounted and its etcd-manager unit active."}, []string{"etcd_cluster"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protokube_etcd_volume_failures_total",
			Help: "Failed attempts to mount an etcd member's volume or start its unit."}, []string{"etcd_cluster"}),
		starts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protokube_etcd_manager_starts_total",
			Help: "etcd-manager unit starts requested."}, []string{"etcd_cluster"}),
	}
	for _, c := range []prometheus.Collector{r.ready, r.failures, r.starts} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering etcd volume metrics: %w", err)
		}
	}
	var errs []error
	for i, e := range spec.EtcdClusters {
		l := control.Layout{Cluster: spec.ClusterName, EtcdCluster: e.Name}
		if err := l.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("spec.etcdClusters[%d]: %w", i, err))
			continue
		}
		acq := &slots.Acquirer{
			Provider:  prov,
			Leases:    slots.Leases{Store: deps.Store, Layout: l, Machine: machine, Duration: cfg.SlotLease},
			Members:   e.Members,
			Spec:      e.Volume,
			CanCreate: kind != config.VolumeProviderMetal,
			Now:       now,
			Log:       log.With("etcdCluster", e.Name),
		}
		m := &member{name: e.Name, acq: acq, target: filepath.Join(cfg.Root, units.EtcdDataDir(e.Name)), unit: units.EtcdManager(e.Name, nil).Name}
		m.st = MemberStatus{EtcdCluster: e.Name, Target: m.target, Unit: m.unit}
		r.members = append(r.members, m)
		r.ready.WithLabelValues(e.Name).Set(0)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return r, nil
}

// Pass reconciles every member whose retry time has come (members run
// concurrently: one waiting for its device does not hold up another) and
// returns the status after it.
func (r *Reconciler) Pass(ctx context.Context) Status {
	var wg sync.WaitGroup
	now := r.now()
	for _, m := range r.members {
		r.mu.Lock()
		due := !now.Before(m.next)
		r.mu.Unlock()
		if !due {
			continue
		}
		wg.Go(func() { r.reconcile(ctx, m) })
	}
	wg.Wait()
	return r.Status()
}

// NextDue returns when the next member should be reconciled: the earliest
// retry of a failing member, or Interval from now.
func (r *Reconciler) NextDue() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	next := r.now().Add(r.cfg.Interval)
	for _, m := range r.members {
		if !m.st.Ready && m.next.Before(next) {
			next = m.next
		}
	}
	return next
}

func (r *Reconciler) reconcile(ctx context.Context, m *member) {
	log := r.log.With("etcdCluster", m.name)
	start := r.now()
	res, state, started, err := r.ensure(ctx, log, m)

	r.mu.Lock()
	defer r.mu.Unlock()
	st := &m.st
	st.LastAttempt = start
	if m.vol != nil {
		st.Slot, st.Volume = m.sel.Slot, m.vol.ID
	}
	if res != nil {
		st.Device, st.FormattedAt = res.Device, res.Identity.FormattedAt
	}
	st.Mounted = res != nil
	if state != "" {
		st.UnitState = state
	}
	if started {
		st.Starts++
		r.starts.WithLabelValues(m.name).Inc()
	}
	if err == nil {
		st.Ready, st.Error, st.Refused, st.Failures, st.NextAttempt = true, "", false, 0, nil
		m.next = time.Time{}
		r.ready.WithLabelValues(m.name).Set(1)
		return
	}
	if ctx.Err() != nil { // shutting down: not a failure of the volume
		return
	}
	st.Ready = false
	st.Error = err.Error()
	st.Refused = refused(err)
	st.Failures++
	delay := backoff(r.cfg.MinBackoff, r.cfg.MaxBackoff, st.Failures)
	m.next = r.now().Add(delay)
	next := m.next
	st.NextAttempt = &next
	r.ready.WithLabelValues(m.name).Set(0)
	r.failures.WithLabelValues(m.name).Inc()
	log.Error("etcd member not ready; will retry", "err", err, "refused", st.Refused, "failures", st.Failures, "retryIn", delay)
}

// ensure holds a slot, mounts its volume and, only once it is mounted at
// the target and this machine's lease on the slot is current, starts the
// unit unless it is already running. It returns the Ensure result (nil when
// not mounted), the unit's state and whether it started it.
func (r *Reconciler) ensure(ctx context.Context, log *slog.Logger, m *member) (*volumes.Result, string, bool, error) {
	fail := func(err error) (*volumes.Result, string, bool, error) {
		return nil, "", false, fmt.Errorf("etcd cluster %s: %w", m.name, err)
	}
	acquired := false
	if m.vol == nil {
		sel, vol, err := m.acq.Acquire(ctx)
		if err != nil {
			if errors.Is(err, slots.ErrNoDisk) {
				if h := r.hint(m.name); h != "" {
					err = fmt.Errorf("%w: %s", err, h)
				}
			}
			return fail(err)
		}
		acquired = true
		log = log.With("slot", sel.Slot)
		m.sel, m.vol = sel, &vol
	}
	res, err := volumes.Ensure(ctx, r.prov, m.sel, *m.vol, m.target, volumes.Options{
		Logger: log, PollInterval: r.cfg.PollInterval, DeviceTimeout: r.cfg.DeviceTimeout, Now: r.now,
	})
	if err != nil {
		// Choose again on the next pass: the volume may have gone.
		m.vol = nil
		return fail(err)
	}
	// Ensure returned after mounting; check the mount table again right
	// before starting, so etcd-manager never writes to the root disk.
	mst, err := mount.Check(res.Device, m.target)
	if err != nil {
		return fail(err)
	}
	if !mst.AtTarget {
		return fail(fmt.Errorf("%s is not mounted at %s after mounting it; not starting %s", res.Device, m.target, m.unit))
	}
	if !acquired {
		// The lease is renewed while the volume is mounted. A lease lost
		// to another machine is reported and nothing more: the volume
		// holds data, so it stays mounted.
		if _, err := m.acq.Leases.Renew(ctx, m.sel.Slot, m.vol.ID, r.now()); err != nil {
			return res, "", false, fmt.Errorf("etcd cluster %s: %w", m.name, err)
		}
	}
	state, err := r.mgr.ActiveState(ctx, m.unit)
	if err != nil {
		return res, "", false, fmt.Errorf("etcd cluster %s: %w", m.name, err)
	}
	switch state {
	case "active", "activating", "reloading":
		return res, state, false, nil
	}
	log.Info("starting etcd-manager", "unit", m.unit, "state", state, "device", res.Device, "slot", m.sel.Slot)
	if err := r.mgr.Start(ctx, m.unit); err != nil {
		return res, state, true, fmt.Errorf("etcd cluster %s: %w", m.name, err)
	}
	return res, "active", true, nil
}

// refused tells whether err is a refusal that needs an operator rather than
// time (a device that has not appeared yet).
func refused(err error) bool {
	for _, e := range []error{format.ErrNotBlank, volumes.ErrWrongIdentity, volumes.ErrAmbiguous,
		mount.ErrTargetBusy, mount.ErrMountedElsewhere, mount.ErrTargetNotEmpty, slots.ErrNoDisk, slots.ErrLost} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// backoff is min doubled per failure after the first, capped at max.
func backoff(minD, maxD time.Duration, failures int) time.Duration {
	d := minD
	for i := 1; i < failures && d < maxD; i++ {
		d *= 2
	}
	return min(d, maxD)
}

// Status returns a copy of the current state.
func (r *Reconciler) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := Status{Cluster: r.cluster, Machine: r.machine, Provider: r.provider, Ready: true, EtcdClusters: []MemberStatus{}}
	for _, m := range r.members {
		ms := m.st
		if ms.NextAttempt != nil {
			t := *ms.NextAttempt
			ms.NextAttempt = &t
		}
		st.EtcdClusters = append(st.EtcdClusters, ms)
		st.Ready = st.Ready && ms.Ready
	}
	sort.Slice(st.EtcdClusters, func(i, j int) bool { return st.EtcdClusters[i].EtcdCluster < st.EtcdClusters[j].EtcdCluster })
	return st
}

// health is nil when every member is ready, else names those that are not.
func (r *Reconciler) health(context.Context) error {
	st := r.Status()
	var bad []string
	for _, m := range st.EtcdClusters {
		if !m.Ready {
			msg := m.Error
			if msg == "" {
				msg = "not reconciled yet"
			}
			bad = append(bad, m.EtcdCluster+": "+msg)
		}
	}
	if len(bad) > 0 {
		return errors.New(strings.Join(bad, "; "))
	}
	return nil
}

// Daemon runs the reconcile loop until Close.
type Daemon struct {
	r        *Reconciler
	obs      *observe.Server
	closeMgr func() error
	cancel   context.CancelFunc
	done     chan struct{}
	once     sync.Once
}

// Start builds the reconciler, serves the status endpoint if configured,
// and runs the loop in a goroutine that Close stops and waits for.
func Start(ctx context.Context, cfg Config, node *config.NodeConfig, deps Deps) (*Daemon, error) {
	closeMgr := func() error { return nil }
	if deps.Store == nil {
		st, err := cfg.Store.Open(ctx)
		if err != nil {
			return nil, err
		}
		deps.Store, closeMgr = st, st.Close
	}
	if deps.Manager == nil {
		m := units.NewDBus()
		deps.Manager = m
		closeStore := closeMgr
		closeMgr = func() error { return errors.Join(m.Close(), closeStore()) }
	}
	if deps.Registry == nil {
		deps.Registry = observe.NewRegistry()
	}
	r, err := NewReconciler(ctx, cfg, node, deps)
	if err != nil {
		closeMgr()
		return nil, err
	}
	d := &Daemon{r: r, closeMgr: closeMgr, done: make(chan struct{})}
	if cfg.StatusListen != "" {
		d.obs, err = observe.Start(observe.Config{
			Addr: cfg.StatusListen, Registry: deps.Registry, Health: r.health, Logger: r.log,
			Status: func(context.Context) (any, error) { return r.Status(), nil },
		})
		if err != nil {
			closeMgr()
			return nil, err
		}
	}
	ctx, d.cancel = context.WithCancel(context.WithoutCancel(ctx))
	go d.loop(ctx)
	return d, nil
}

func (d *Daemon) loop(ctx context.Context) {
	defer close(d.done)
	if len(d.r.members) == 0 {
		d.r.log.Info("the node configuration lists no etcd clusters; nothing to mount")
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.r.Pass(ctx)
		t.Reset(max(d.r.NextDue().Sub(d.r.now()), time.Millisecond))
	}
}

// Status returns the current state.
func (d *Daemon) Status() Status { return d.r.Status() }

// StatusAddr is the status endpoint's address, or "" when none.
func (d *Daemon) StatusAddr() string {
	if d.obs == nil {
		return ""
	}
	return d.obs.Addr()
}

// Close stops the loop, waits for it, and stops the status server. Safe to
// call twice.
func (d *Daemon) Close() error {
	var err error
	d.once.Do(func() {
		d.cancel()
		<-d.done
		if d.obs != nil {
			err = d.obs.Close()
		}
		err = errors.Join(err, d.closeMgr())
	})
	return err
}
