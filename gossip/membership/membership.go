// Package membership runs a node's gossip membership on hashicorp/memberlist:
// encrypted and authenticated with a keyring from the state store that is
// re-read and applied without a restart, seeds from a seeds.Provider, and a
// rejoin loop that heals partitions. The replicated state rides on it through
// a memberlist Delegate (package records).
package membership

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kopsnode/agents/gossip/seeds"
)

// DefaultPort is the default memberlist port.
const DefaultPort = 3996

// Config configures a gossip node.
type Config struct {
	// NodeName is unique in the cluster (the node's hostname).
	NodeName string
	// BindAddr and BindPort are where memberlist listens (UDP and TCP).
	// Port 0 picks a free port.
	BindAddr string
	BindPort int
	// AdvertiseAddr and AdvertisePort are what other members dial; empty
	// and 0 mean the bind address and port.
	AdvertiseAddr string
	AdvertisePort int
	// Keys supplies the encryption keyring. Required unless Insecure.
	Keys KeySource
	// Insecure runs without encryption. For tests only.
	Insecure bool
	// KeyPollInterval is how often the keyring's version is checked.
	KeyPollInterval time.Duration
	// Seeds supplies addresses to join; nil for none (a first node).
	Seeds seeds.Provider
	// RejoinInterval is how often seeds that are not live members are
	// (re)joined, which heals partitions.
	RejoinInterval time.Duration
	// Timings, as in memberlist.Config.
	GossipInterval   time.Duration
	GossipNodes      int
	ProbeInterval    time.Duration
	ProbeTimeout     time.Duration
	PushPullInterval time.Duration
	SuspicionMult    int
	// Delegate and Events carry replicated state (records.Table).
	Delegate memberlist.Delegate
	Events   memberlist.EventDelegate
	// Registerer receives the membership metrics; nil for none.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// DefaultConfig returns LAN timings for node.
func DefaultConfig(node string) Config {
	return Config{
		NodeName:         node,
		BindAddr:         "0.0.0.0",
		BindPort:         DefaultPort,
		KeyPollInterval:  30 * time.Second,
		RejoinInterval:   10 * time.Second,
		GossipInterval:   200 * time.Millisecond,
		GossipNodes:      3,
		ProbeInterval:    time.Second,
		ProbeTimeout:     500 * time.Millisecond,
		PushPullInterval: 30 * time.Second,
		SuspicionMult:    4,
	}
}

// Validate returns every problem, naming the field.
func (c Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("membership.NodeName: empty"))
	}
	if c.BindAddr == "" || net.ParseIP(c.BindAddr) == nil {
		errs = append(errs, fmt.Errorf("membership.BindAddr: %q is not an IP address", c.BindAddr))
	}
	if c.AdvertiseAddr != "" && net.ParseIP(c.AdvertiseAddr) == nil {
		errs = append(errs, fmt.Errorf("membership.AdvertiseAddr: %q is not an IP address", c.AdvertiseAddr))
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		errs = append(errs, fmt.Errorf("membership.BindPort: %d out of range", c.BindPort))
	}
	if c.AdvertisePort < 0 || c.AdvertisePort > 65535 {
		errs = append(errs, fmt.Errorf("membership.AdvertisePort: %d out of range", c.AdvertisePort))
	}
	if c.Keys == nil && !c.Insecure {
		errs = append(errs, errors.New("membership.Keys: no keyring; gossip must be encrypted"))
	}
	for _, d := range []struct {
		n string
		v time.Duration
	}{{"KeyPollInterval", c.KeyPollInterval}, {"RejoinInterval", c.RejoinInterval}, {"GossipInterval", c.GossipInterval}, {"ProbeInterval", c.ProbeInterval}, {"ProbeTimeout", c.ProbeTimeout}, {"PushPullInterval", c.PushPullInterval}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("membership.%s: must be positive, got %s", d.n, d.v))
		}
	}
	if c.GossipNodes <= 0 {
		errs = append(errs, fmt.Errorf("membership.GossipNodes: must be positive, got %d", c.GossipNodes))
	}
	if c.SuspicionMult <= 0 {
		errs = append(errs, fmt.Errorf("membership.SuspicionMult: must be positive, got %d", c.SuspicionMult))
	}
	if c.Delegate == nil {
		errs = append(errs, errors.New("membership.Delegate: nil"))
	}
	return errors.Join(errs...)
}

// Member is one node as this node sees it.
type Member struct {
	Name  string `json:"name"`
	Addr  string `json:"addr"`
	State string `json:"state"` // alive or dead (failed or left)
	// Since is when a dead member was last seen leaving; nil while alive.
	Since *time.Time `json:"since,omitempty"`
}

// Node is a running gossip member.
type Node struct {
	cfg  Config
	log  *slog.Logger
	ml   *memberlist.Memberlist
	kr   *memberlist.Keyring
	self string

	mu       sync.Mutex // guards departed, keysVersion
	departed map[string]Member
	keysVer  string

	// ctx ends the node's background work; cancel is called by Close.
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Start creates the memberlist, joins the seeds it can reach and starts the
// key watcher and rejoin loop. A node with no reachable seed starts alone
// and keeps trying.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	n := &Node{cfg: cfg, log: cfg.Logger, departed: map[string]Member{}}
	n.ctx, n.cancel = context.WithCancel(context.Background())

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeName
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	if cfg.AdvertisePort == 0 {
		mc.AdvertisePort = cfg.BindPort
	}
	mc.GossipInterval = cfg.GossipInterval
	mc.GossipNodes = cfg.GossipNodes
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.PushPullInterval = cfg.PushPullInterval
	mc.SuspicionMult = cfg.SuspicionMult
	mc.Delegate = cfg.Delegate
	mc.Events = (*eventTracker)(n)
	mc.Logger = log.New(&logWriter{log: cfg.Logger}, "", 0)
	if !cfg.Insecure {
		ks, ver, err := cfg.Keys.Load(ctx)
		if err != nil {
			return nil, err
		}
		primary, all, err := ks.Decode(cfg.Keys.String())
		if err != nil {
			return nil, err
		}
		kr, err := memberlist.NewKeyring(all, primary)
		if err != nil {
			return nil, fmt.Errorf("gossip keyring from %s: %w", cfg.Keys, err)
		}
		n.kr, n.keysVer = kr, ver
		mc.Keyring = kr
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("starting gossip on %s: %w", net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.BindPort)), err)
	}
	n.ml = ml
	self := ml.LocalNode()
	n.self = net.JoinHostPort(self.Addr.String(), strconv.Itoa(int(self.Port)))
	if err := registerMetrics(cfg.Registerer, n); err != nil {
		n.cancel()
		ml.Shutdown()
		return nil, err
	}
	n.rejoin(ctx)
	n.wg.Add(1)
	go n.loop()
	return n, nil
}

// Addr returns the advertised host:port of this node.
func (n *Node) Addr() string { return n.self }

// Memberlist returns the underlying memberlist, for advanced callers.
func (n *Node) Memberlist() *memberlist.Memberlist { return n.ml }

// Join joins the given addresses now and returns how many answered.
func (n *Node) Join(addrs []string) (int, error) { return n.ml.Join(addrs) }

// NumAlive returns the number of live members, this node included.
func (n *Node) NumAlive() int { return n.ml.NumMembers() }

// Members returns every known member, departed ones included, sorted by name.
func (n *Node) Members() []Member {
	out := []Member{}
	seen := map[string]bool{}
	// Members returns the nodes that are not dead or left; memberlist does
	// not expose suspicion, so they are reported alive.
	for _, m := range n.ml.Members() {
		seen[m.Name] = true
		out = append(out, Member{Name: m.Name, Addr: m.Address(), State: "alive"})
	}
	n.mu.Lock()
	for name, m := range n.departed {
		if !seen[name] {
			out = append(out, m)
		}
	}
	n.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Close leaves the cluster (telling peers, bounded by a timeout), shuts
// memberlist down and waits for the node's goroutines. Safe to call twice.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.cancel()
		n.wg.Wait()
		if err := n.ml.Leave(2 * time.Second); err != nil {
			n.log.Debug("leaving gossip", "err", err)
		}
		n.closeErr = n.ml.Shutdown()
	})
	return n.closeErr
}

// Kill shuts memberlist down without telling peers, as a crash would. For tests.
func (n *Node) Kill() error {
	n.closeOnce.Do(func() {
		n.cancel()
		n.wg.Wait()
		n.closeErr = n.ml.Shutdown()
	})
	return n.closeErr
}

func (n *Node) loop() {
	defer n.wg.Done()
	rejoin := time.NewTicker(n.cfg.RejoinInterval)
	defer rejoin.Stop()
	keys := time.NewTicker(n.cfg.KeyPollInterval)
	defer keys.Stop()
	ctx := n.ctx
	for {
		select {
		case <-ctx.Done():
			return
		case <-rejoin.C:
			n.rejoin(ctx)
		case <-keys.C:
			if n.kr != nil {
				if err := n.ReloadKeys(ctx); err != nil && ctx.Err() == nil {
					n.log.Warn("reloading gossip keys", "err", err)
				}
			}
		}
	}
}

// rejoin joins every seed that is not a live member.
func (n *Node) rejoin(ctx context.Context) {
	if n.cfg.Seeds == nil {
		return
	}
	addrs, err := n.cfg.Seeds.Seeds(ctx)
	if err != nil {
		n.log.Warn("finding gossip seeds", "err", err)
		return
	}
	live := map[string]bool{n.self: true}
	for _, m := range n.ml.Members() {
		live[m.Address()] = true
	}
	var want []string
	for _, a := range addrs {
		if !live[a] {
			want = append(want, a)
		}
	}
	if len(want) == 0 {
		return
	}
	if joined, err := n.ml.Join(want); err != nil && joined == 0 {
		n.log.Debug("joining gossip seeds", "seeds", want, "err", err)
	} else {
		n.log.Debug("joined gossip seeds", "seeds", want, "answered", joined)
	}
}

// ReloadKeys re-reads the keyring if its version changed and applies it:
// add new keys, switch the primary, remove keys no longer listed.
func (n *Node) ReloadKeys(ctx context.Context) error {
	if n.kr == nil {
		return nil
	}
	ver, err := n.cfg.Keys.Version(ctx)
	if err != nil {
		return err
	}
	n.mu.Lock()
	same := ver == n.keysVer
	n.mu.Unlock()
	if same {
		return nil
	}
	ks, ver, err := n.cfg.Keys.Load(ctx)
	if err != nil {
		return err
	}
	if err := applyKeys(n.kr, ks, n.cfg.Keys.String()); err != nil {
		return err
	}
	n.mu.Lock()
	n.keysVer = ver
	n.mu.Unlock()
	n.log.Info("applied gossip keys", "source", n.cfg.Keys.String(), "version", ver, "keys", len(n.kr.GetKeys()))
	return nil
}

type eventTracker Node

func (e *eventTracker) NotifyJoin(m *memberlist.Node) {
	e.mu.Lock()
	delete(e.departed, m.Name)
	e.mu.Unlock()
	if e.cfg.Events != nil {
		e.cfg.Events.NotifyJoin(m)
	}
}

func (e *eventTracker) NotifyLeave(m *memberlist.Node) {
	e.mu.Lock()
	// memberlist passes the node with a stale State field (it keeps the
	// real state elsewhere), so dead and left cannot be told apart here.
	now := time.Now()
	e.departed[m.Name] = Member{Name: m.Name, Addr: m.Address(), State: "dead", Since: &now}
	// Bound the departed list: forget the oldest beyond 4096.
	if len(e.departed) > 4096 {
		var oldest string
		var t time.Time
		for k, v := range e.departed {
			if oldest == "" || v.Since.Before(t) {
				oldest, t = k, *v.Since
			}
		}
		delete(e.departed, oldest)
	}
	e.mu.Unlock()
	if e.cfg.Events != nil {
		e.cfg.Events.NotifyLeave(m)
	}
}

func (e *eventTracker) NotifyUpdate(m *memberlist.Node) {
	if e.cfg.Events != nil {
		e.cfg.Events.NotifyUpdate(m)
	}
}

// logWriter turns memberlist's log lines into slog records.
type logWriter struct{ log *slog.Logger }

func (w *logWriter) Write(p []byte) (int, error) {
	s := strings.TrimSpace(string(p))
	level := slog.LevelDebug
	switch {
	case strings.Contains(s, "[ERR]"):
		level = slog.LevelWarn // memberlist reports peer failures as errors
	case strings.Contains(s, "[WARN]"):
		level = slog.LevelInfo
	}
	w.log.Log(context.Background(), level, "memberlist: "+s)
	return len(p), nil
}

var _ io.Writer = (*logWriter)(nil)
