package gossipd

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kopsnode/agents/gossip/dnsserver"
	"github.com/kopsnode/agents/gossip/hlc"
	"github.com/kopsnode/agents/gossip/membership"
	"github.com/kopsnode/agents/gossip/records"
	"github.com/kopsnode/agents/gossip/seeds"
	"github.com/kopsnode/agents/pkg/hostsfile"
	"github.com/kopsnode/agents/pkg/observe"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/protokube/gossipkeys"
	"github.com/kopsnode/agents/protokube/podnet"
)

// Deps are the daemon's injected parts; zero values select the real ones.
type Deps struct {
	// Clock versions records (hlc.New(time.Now, time.Minute) when nil).
	Clock  *hlc.Clock
	Logger *slog.Logger
	// Store overrides opening Config.Store.
	Store store.Store
	// EC2 overrides the EC2 client built from the default AWS configuration.
	EC2 ec2.DescribeInstancesAPIClient
	// HostsFS overrides the filesystem of the hosts file.
	HostsFS hostsfile.FS
	// PodNodes, PodRoutes and PodMasq override podnet's Node source,
	// routing table and masquerade rules (nil: the Node object through the
	// kubeconfig, netlink, iptables).
	PodNodes  podnet.NodeSource
	PodRoutes podnet.RouteTable
	PodMasq   podnet.Masquerader
	// Rand supplies a created keyring's key (crypto/rand when nil).
	Rand io.Reader
}

// Daemon is a running gossip daemon.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	store   store.Store
	ownsSt  bool
	table   *records.Table
	node    *membership.Node
	dns     *dnsserver.Server
	obs     *observe.Server
	reg     *seeds.Registration
	hostsW  *hostsfile.Hosts
	podnet  *podnet.Controller
	pub     *publisher
	zone    string
	closers []func() error

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	serial atomic.Uint32 // SOA serial, bumped on every rebuild

	mu       sync.Mutex // guards lastSync
	lastSync SyncState
}

// SyncState is the outcome of the latest DNS and hosts update.
type SyncState struct {
	At        time.Time `json:"at"`
	Names     int       `json:"names"`
	HostsErr  string    `json:"hostsError,omitempty"`
	HostsFile string    `json:"hostsFile,omitempty"`
}

// Start starts every part and returns when gossip, DNS and the endpoints
// listen. On error everything started so far is closed, and the error
// names the part that failed and why; Start never panics on one. Without
// a keyring in the store it waits for one (or creates it with
// Config.CreateKeyring) until ctx ends.
func Start(ctx context.Context, cfg Config, deps Deps) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Daemon{cfg: cfg, log: log, zone: cfg.Zone(), stop: make(chan struct{})}
	d.serial.Store(uint32(time.Now().Unix()))
	// d is a local that is never reset: on error the parts started so far
	// are closed through it (a named result set to nil by `return nil,
	// err` once made this a nil dereference that hid the cause).
	if err := d.start(ctx, deps); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Daemon) start(ctx context.Context, deps Deps) (err error) {
	cfg, log := d.cfg, d.log
	d.store = deps.Store
	if d.store == nil {
		st, err := cfg.Store.Open(ctx)
		if err != nil {
			return fmt.Errorf("opening the state store %s: %w", cfg.Store.URL, err)
		}
		d.store = st
		d.closers = append(d.closers, st.Close)
	}
	if err := d.ensureKeyring(ctx, deps.Rand); err != nil {
		return err
	}
	clock := deps.Clock
	if clock == nil {
		clock = hlc.New(time.Now, time.Minute)
	}
	registry := observe.NewRegistry()

	rc := records.DefaultConfig(cfg.NodeName)
	rc.Clock = clock
	rc.LeaveGrace = cfg.LeaveGrace
	rc.Registerer = registry
	rc.Logger = log.With("part", "records")
	if cfg.Fast {
		rc.SweepInterval = 100 * time.Millisecond
	}
	d.table, err = records.New(rc)
	if err != nil {
		return fmt.Errorf("starting the record table: %w", err)
	}
	d.closers = append(d.closers, d.table.Close)
	d.pub = newPublisher(d.table, nil)

	bind, _ := parseHostPort(cfg.Bind)
	mc := membership.DefaultConfig(cfg.NodeName)
	mc.BindAddr = bind.Addr().String()
	mc.BindPort = int(bind.Port())
	if cfg.Advertise != "" {
		if ap, err := netip.ParseAddrPort(cfg.Advertise); err == nil {
			mc.AdvertiseAddr, mc.AdvertisePort = ap.Addr().String(), int(ap.Port())
		} else {
			mc.AdvertiseAddr = cfg.Advertise
		}
	}
	mc.Keys = membership.StoreKeys{Store: d.store, Key: membership.KeysObject(cfg.Cluster)}
	mc.Delegate = d.table.Delegate()
	mc.Events = d.table.Events()
	mc.Registerer = registry
	mc.Logger = log.With("part", "membership")
	if cfg.Fast {
		mc.GossipInterval = 50 * time.Millisecond
		mc.ProbeInterval = 200 * time.Millisecond
		mc.ProbeTimeout = 100 * time.Millisecond
		mc.PushPullInterval = time.Second
		mc.SuspicionMult = 2
		mc.RejoinInterval = 500 * time.Millisecond
		mc.KeyPollInterval = 500 * time.Millisecond
	}
	var storeSeeds *seeds.Registry
	switch cfg.Seeds {
	case "static":
		mc.Seeds = seeds.Static(cfg.StaticSeeds)
	case "store":
		storeSeeds = &seeds.Registry{Store: d.store, Cluster: cfg.Cluster}
		mc.Seeds = storeSeeds
	case "aws":
		client := deps.EC2
		if client == nil {
			awsCfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(cfg.AWSRegion))
			if err != nil {
				return fmt.Errorf("--seeds=aws: loading the AWS configuration: %w", err)
			}
			client = ec2.NewFromConfig(awsCfg)
		}
		tags := map[string]string{}
		for _, kv := range cfg.AWSTags {
			k, v, _ := strings.Cut(kv, "=")
			tags[k] = v
		}
		mc.Seeds = seeds.EC2{Client: client, Tags: tags, Port: int(bind.Port())}
	}
	d.node, err = membership.Start(ctx, mc)
	if err != nil {
		return fmt.Errorf("starting gossip membership on %s: %w", cfg.Bind, err)
	}
	d.closers = append(d.closers, d.node.Close)
	if storeSeeds != nil {
		d.reg, err = storeSeeds.Keep(ctx, cfg.NodeName, d.node.Addr(), cfg.SeedTTL, log.With("part", "seeds"))
		if err != nil {
			return fmt.Errorf("registering as a seed in the store: %w", err)
		}
		d.closers = append(d.closers, d.reg.Close)
	}

	if err := d.publish(); err != nil {
		return fmt.Errorf("publishing this node's records: %w", err)
	}

	if cfg.PodNet.Mode != podnet.ModeOff {
		host, _, _ := net.SplitHostPort(d.node.Addr())
		self, err := netip.ParseAddr(host)
		if err != nil {
			return fmt.Errorf("--pod-network: this node's advertise address %q is not an IP address", host)
		}
		d.podnet, err = podnet.Start(ctx, cfg.PodNet, podnet.Deps{
			Table: d.table, Addr: self, Nodes: deps.PodNodes, Routes: deps.PodRoutes, Masq: deps.PodMasq,
			Registerer: registry, Logger: log.With("part", "podnet"),
		})
		if err != nil {
			return fmt.Errorf("starting the pod network: %w", err)
		}
		d.closers = append(d.closers, d.podnet.Close)
	}

	if cfg.DNSListen != "" {
		dc := dnsserver.DefaultConfig(cfg.DNSListen, d.zone)
		dc.Forward = cfg.DNSForward
		dc.Registerer = registry
		dc.Logger = log.With("part", "dns")
		d.dns, err = dnsserver.Start(dc)
		if err != nil {
			return fmt.Errorf("starting the DNS server on %s (--dns-listen): %w", cfg.DNSListen, err)
		}
		d.closers = append(d.closers, d.dns.Close)
	}
	if cfg.HostsFile != "" {
		d.hostsW = &hostsfile.Hosts{FS: deps.HostsFS, Path: cfg.HostsFile}
	}
	d.obs, err = observe.Start(observe.Config{
		Addr:     cfg.StatusAddr,
		Registry: registry,
		Health:   d.health,
		Status:   func(context.Context) (any, error) { return d.Status(), nil },
		Handlers: d.pub.handlers(),
		Logger:   log,
	})
	if err != nil {
		return fmt.Errorf("starting the status endpoint on %s (--status-listen): %w", cfg.StatusAddr, err)
	}
	d.closers = append(d.closers, d.obs.Close)
	registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kopsnode_gossip_dns_names",
		Help: "Names the cluster DNS server answers for.",
	}, func() float64 { d.mu.Lock(); defer d.mu.Unlock(); return float64(d.lastSync.Names) }))

	d.sync(ctx)
	d.wg.Add(2)
	go d.syncLoop()
	go d.expireLoop()
	log.Info("gossip started", "node", cfg.NodeName, "addr", d.node.Addr(), "zone", d.zone, "dns", d.DNSAddr(), "status", d.obs.Addr())
	return nil
}

// publish writes this node's own records: its name in the zone and --publish.
func (d *Daemon) publish() error {
	host, _, _ := net.SplitHostPort(d.node.Addr())
	self, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("advertise address %q: %w", host, err)
	}
	if err := d.table.Put(dnsserver.RecordKey(d.cfg.NodeName+"."+d.zone), dnsserver.FormatAddrs([]netip.Addr{self})); err != nil {
		return err
	}
	for _, p := range d.cfg.Publish {
		name, addrs, _ := parsePublish(p)
		for i, a := range addrs {
			if !a.IsValid() {
				addrs[i] = self
			}
		}
		if err := d.table.Put(dnsserver.RecordKey(d.qualify(name)), dnsserver.FormatAddrs(addrs)); err != nil {
			return fmt.Errorf("--publish %s: %w", p, err)
		}
	}
	return nil
}

// qualify makes a name absolute in the zone unless it already ends with a dot.
func (d *Daemon) qualify(name string) string {
	if strings.HasSuffix(name, ".") {
		return name
	}
	return name + "." + d.zone
}

func (d *Daemon) health(ctx context.Context) error {
	var errs []error
	d.mu.Lock()
	if d.lastSync.HostsErr != "" {
		errs = append(errs, errors.New("hosts file: "+d.lastSync.HostsErr))
	}
	d.mu.Unlock()
	if d.podnet != nil {
		errs = append(errs, d.podnet.Health())
	}
	return errors.Join(errs...)
}

// expireLoop withdraws the local API's publications whose lease ended.
func (d *Daemon) expireLoop() {
	defer d.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			for _, key := range d.pub.expire() {
				d.log.Info("withdrew a record whose publisher stopped refreshing it", "key", key)
			}
		}
	}
}

func (d *Daemon) syncLoop() {
	defer d.wg.Done()
	// Ends when the loop returns, after Close; a sync waiting for the hosts
	// file lock is bounded by hostsLockWait meanwhile.
	ctx, cancelCtx := context.WithCancel(context.Background())
	defer cancelCtx()
	ch, cancel := d.table.Subscribe()
	defer cancel()
	retry := time.NewTicker(30 * time.Second)
	defer retry.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-ch:
		case <-retry.C:
		}
		// Coalesce bursts of changes (a join delivers many at once).
		select {
		case <-d.stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
		d.sync(ctx)
	}
}

// The gossip block's markers in the hosts file. They are the ones the block
// has always had, so that an upgraded node replaces its old block.
const (
	HostsBeginMarker = "# Begin host entries managed by kopsnode gossip - do not edit"
	HostsEndMarker   = "# End host entries managed by kopsnode gossip"
)

// hostsLockWait bounds a wait for the hosts file lock, which another agent
// (an etcd-manager) holds for a moment while it rewrites its own block.
const hostsLockWait = 10 * time.Second

// sync rebuilds the DNS zone and the hosts block from the records.
func (d *Daemon) sync(ctx context.Context) {
	names := dnsserver.NamesFromRecords(d.table.All(), func(key, owner string, err error) {
		d.log.Debug("skipping a malformed DNS record", "key", key, "owner", owner, "err", err)
	})
	st := SyncState{At: time.Now(), Names: len(names)}
	if d.dns != nil {
		d.dns.SetZones(dnsserver.BuildZones([]string{d.zone}, names, d.serial.Add(1), 30))
	}
	if d.hostsW != nil {
		st.HostsFile = d.hostsW.Path
		ctx, cancel := context.WithTimeout(ctx, hostsLockWait)
		_, err := d.hostsW.Update(ctx, hostsfile.Block{Begin: HostsBeginMarker, End: HostsEndMarker}, hostsfile.ByName(names))
		cancel()
		if err != nil {
			st.HostsErr = err.Error()
			d.log.Warn("updating the hosts file", "err", err)
		}
	}
	d.mu.Lock()
	d.lastSync = st
	d.mu.Unlock()
}

// Table returns the record table, for callers that publish records.
func (d *Daemon) Table() *records.Table { return d.table }

// StatusAddr returns the address of the status endpoint.
func (d *Daemon) StatusAddr() string { return d.obs.Addr() }

// DNSAddr returns the DNS server's address, or "" when disabled.
func (d *Daemon) DNSAddr() string {
	if d.dns == nil {
		return ""
	}
	return d.dns.Addr()
}

// Status is the document of /status and `protokube status`.
type Status struct {
	Node    string              `json:"node"`
	Addr    string              `json:"addr"`
	Cluster string              `json:"cluster"`
	Zone    string              `json:"zone"`
	DNS     string              `json:"dns,omitempty"`
	Members []membership.Member `json:"members"`
	Records []RecordStatus      `json:"records"`
	Sync    SyncState           `json:"sync"`
	// PodNet is the pod network's state when --pod-network is on.
	PodNet *podnet.Status `json:"podNetwork,omitempty"`
}

// RecordStatus is one record in the status document.
type RecordStatus struct {
	Owner      string        `json:"owner"`
	Key        string        `json:"key"`
	Value      string        `json:"value,omitempty"`
	Version    hlc.Timestamp `json:"version"`
	Deleted    bool          `json:"deleted,omitempty"`
	OwnerAlive bool          `json:"ownerAlive"`
}

// Status returns the daemon's current status.
func (d *Daemon) Status() Status {
	s := Status{Node: d.cfg.NodeName, Addr: d.node.Addr(), Cluster: d.cfg.Cluster, Zone: d.zone, DNS: d.DNSAddr(), Members: d.node.Members()}
	for _, v := range d.table.All() {
		s.Records = append(s.Records, RecordStatus{Owner: v.Owner, Key: v.Key, Value: string(v.Value), Version: v.Version, Deleted: v.Deleted, OwnerAlive: v.OwnerAlive})
	}
	d.mu.Lock()
	s.Sync = d.lastSync
	d.mu.Unlock()
	if d.podnet != nil {
		ps := d.podnet.Status()
		s.PodNet = &ps
	}
	return s
}

// Close stops the daemon: the sync loop first, then the parts in reverse
// order of start (endpoints, DNS, seed registration, membership with a
// graceful leave, records, store). Safe to call twice.
func (d *Daemon) Close() error {
	d.closeOnce.Do(func() {
		close(d.stop)
		d.wg.Wait()
		var errs []error
		for i := len(d.closers) - 1; i >= 0; i-- {
			if err := d.closers[i](); err != nil {
				errs = append(errs, err)
			}
		}
		d.closeErr = errors.Join(errs...)
	})
	return d.closeErr
}

// ensureKeyring makes sure the gossip keyring exists before membership
// reads it. With Config.CreateKeyring (control-plane nodes) it creates one
// if absent, through gossipkeys' create-if-absent, so two control-plane
// nodes booting at once yield one keyring. Otherwise (workers) it waits for
// the keyring, logging every KeyringWait what it waits for, until ctx ends.
// A missing bucket or refused access ends the start at once (the settings
// are wrong); other errors (a store that does not answer) are reported the
// same way as absence and retried.
func (d *Daemon) ensureKeyring(ctx context.Context, rnd io.Reader) error {
	kr := gossipkeys.ForCluster(d.store, d.cfg.Cluster)
	if d.cfg.CreateKeyring {
		if rnd == nil {
			rnd = rand.Reader
		}
		res, err := kr.Create(ctx, rnd)
		if err != nil {
			return err
		}
		if res.Changed {
			d.log.Info("created the gossip keyring", "url", kr.URL(), "primary", res.Added)
		}
		return nil
	}
	for attempt := 0; ; attempt++ {
		_, err := d.store.Stat(ctx, kr.Key)
		if err == nil {
			if attempt > 0 {
				d.log.Info("the gossip keyring exists", "url", kr.URL())
			}
			return nil
		}
		if errors.Is(err, store.ErrNoBucket) || errors.Is(err, store.ErrAccessDenied) {
			// The store settings or credentials are wrong: waiting
			// would only hide it.
			return fmt.Errorf("reading the gossip keyring %s: %w", kr.URL(), err)
		}
		if errors.Is(err, store.ErrNotFound) {
			d.log.Warn("waiting for the gossip keyring: a control-plane node creates it on its first boot (or run `protokube gossip-keys create`)", "url", kr.URL(), "attempt", attempt+1)
		} else {
			d.log.Warn("waiting for the gossip keyring: cannot read it", "url", kr.URL(), "err", err, "attempt", attempt+1)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the gossip keyring %s: %w", kr.URL(), ctx.Err())
		case <-time.After(d.cfg.KeyringWait):
		}
	}
}
