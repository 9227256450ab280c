package manager

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/discovery"
	"github.com/kopsnode/agents/etcd-manager/etcdprocess"
	"github.com/kopsnode/agents/etcd-manager/identity"
	"github.com/kopsnode/agents/etcd-manager/leader"
	"github.com/kopsnode/agents/etcd-manager/peer"
	"github.com/kopsnode/agents/pkg/pki"
)

// Manager is a running etcd-manager instance. Close stops it and its etcd
// (etcd is a child process of the manager; a restarted manager restarts
// etcd from its saved state).
type Manager struct {
	cfg    Config
	layout control.Layout
	logger *slog.Logger
	now    func() time.Time

	ks     *pki.Keystore
	certs  *certs
	lease  *leader.Lease
	elect  *election
	server *peer.Server
	client *peer.Client
	met    *metrics

	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
	// loopCtx is the loop's context; each leader term's goroutines run
	// under a child of it. backupWG counts the retention and restore
	// goroutines (the term tasks count their own).
	loopCtx  context.Context
	backupWG sync.WaitGroup

	// opMu serialises changes to the local etcd (join, leave, rotate,
	// supervision), so two leader commands cannot interleave.
	opMu sync.Mutex

	mu sync.Mutex // guards the fields below
	// state is the persisted identity and membership.
	state identity.State
	// proc is the local etcd, nil when none runs.
	proc *etcdprocess.Process
	// maxTerm is the highest leader term whose command was obeyed.
	maxTerm     int64
	lastRestart time.Time
	// leader-side memory.
	unhealthySince map[string]time.Time
	status         Status
	lastReconcile  time.Time
	etcdClients    map[string]*clientv3.Client
	localClient    *clientv3.Client
	hostsWritten   string
	leaderSince    time.Time
	// closing is set by Close and Kill; no etcd is started after it.
	closing bool
	// bootstrapped and warnedCommands are only touched by the loop goroutine.
	bootstrapped   bool
	warnedCommands map[string]bool
	// The API server's etcd client certificate (ensureAPIServerCert):
	// the one in the directory, whether it was checked against the CA,
	// when this instance last wrote it, and the last error.
	apiCert     *x509.Certificate
	apiVerified bool
	apiWritten  time.Time
	apiErr      string
	// backupTask is the current leader term's backup goroutine;
	// backupSrc what it snapshots from; backups its memory.
	backupTask termTask[backupChans]
	backupSrc  *backupSource
	backups    backupState
	// restores is the restore runner and the member's restore record.
	restores restoreRuntime
	// retention is the leader's memory of its retention passes.
	retention retentionState
	// retentionPass is held for a whole retention pass, from its check
	// that no restore is active to its last deletion; a restore is only
	// started (its state created) while it is free, so a pass never
	// deletes what a restore starting beside it is about to read.
	retentionPass sync.Mutex
	// quorum is the quorum-loss plan and recovery (quorumloss.go).
	quorum quorumState
	// verify is the leader's verify goroutine and its state (verify.go).
	verify verifyKeeper
	// deltas is the leader's delta goroutine and its state (deltas.go).
	deltas deltaKeeper
}

// Start validates cfg, loads the identity, issues certificates, serves
// peers, restarts etcd if this instance is a member, and starts the loop.
func Start(ctx context.Context, cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("etcd-manager config: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data dir %s: %w", cfg.DataDir, err)
	}
	st, err := identity.LoadOrCreate(cfg.DataDir, cfg.ID)
	if err != nil {
		return nil, err
	}
	logger = logger.With("instance", st.ID, "etcdCluster", cfg.EtcdCluster)
	layout := cfg.layout()

	ks, err := pki.NewKeystore(cfg.Store, layout.PKIPrefix(), logger, now)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		cfg:            cfg,
		layout:         layout,
		logger:         logger,
		now:            now,
		ks:             ks,
		certs:          &certs{dir: filepath.Join(cfg.DataDir, "pki"), validity: cfg.CertValidity},
		state:          st,
		unhealthySince: map[string]time.Time{},
		etcdClients:    map[string]*clientv3.Client{},
		warnedCommands: map[string]bool{},
		done:           make(chan struct{}),
		elect:          newElection(),
	}
	if err := m.loadCAs(ctx); err != nil {
		// A member can run on the certificates it issued before: etcd
		// comes back although the store is down, and the CAs are loaded
		// when the store answers again.
		if st.ClusterToken == "" {
			return nil, err
		}
		if ferr := m.certs.loadFromFiles(); ferr != nil {
			return nil, fmt.Errorf("%w (and cannot start from local certificates: %v)", err, ferr)
		}
		logger.Error("state store unreachable; starting from the certificates of the last run", "err", err)
	} else {
		subj := m.subject()
		if err := m.certs.issueManager(subj); err != nil {
			return nil, err
		}
		if err := m.certs.issueEtcd(subj); err != nil {
			return nil, err
		}
	}
	m.met = newMetrics(cfg.MetricsRegistry, m)
	m.ensureAPIServerCert()
	m.lease = leader.New(cfg.Store, layout.LeaderKey(), st.ID, cfg.LeaseDuration, clock{now})

	pool, err := m.certs.managerPool()
	if err != nil {
		return nil, fmt.Errorf("etcd-manager CA: %w", err)
	}
	m.client = peer.NewClient(peer.ClientTLS(pool, m.certs.managerCert), cfg.Address, cfg.PeerTimeout)
	m.server, err = peer.Serve(m.managerAddr(), peer.ServerTLS(pool, m.certs.managerCert), m, logger)
	if err != nil {
		m.client.Close()
		m.met.unregister()
		return nil, err
	}
	if st.ClusterToken != "" {
		if err := m.startEtcdLocked(); err != nil {
			// Reported, not fatal: the loop retries, and status shows it.
			logger.Error("starting etcd from saved state", "err", err)
		}
	}
	loopCtx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.loopCtx = loopCtx
	go m.run(loopCtx)
	logger.Info("etcd-manager started", "managerAddr", m.managerAddr(), "peerURL", m.peerURL(), "clientURL", m.clientURL())
	return m, nil
}

type clock struct{ now func() time.Time }

func (c clock) Now() time.Time { return c.now() }

// ID is the instance identity.
func (m *Manager) ID() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state.ID
}

// Self is this instance as a discovery record.
func (m *Manager) Self() discovery.Peer {
	return discovery.Peer{ID: m.ID(), ManagerAddr: m.managerAddr()}
}

func (m *Manager) subject() certSubject {
	s := certSubject{id: m.state.ID, dnsNames: []string{m.cfg.MemberName(m.state.ID)}, ips: []net.IP{net.ParseIP(m.cfg.Address)}}
	// Clients of the local listener verify etcd against that address.
	if ip := net.ParseIP(m.cfg.LocalClientAddress); ip != nil && !ip.Equal(net.ParseIP(m.cfg.Address)) {
		s.ips = append(s.ips, ip)
	}
	for _, san := range m.cfg.ExtraSANs {
		if ip := net.ParseIP(san); ip != nil {
			s.ips = append(s.ips, ip)
		} else {
			s.dnsNames = append(s.dnsNames, san)
		}
	}
	return s
}

func (m *Manager) managerAddr() string {
	return net.JoinHostPort(m.cfg.Address, strconv.Itoa(m.cfg.ManagerPort))
}

func (m *Manager) host() string {
	if m.cfg.AdvertiseNames {
		return m.cfg.MemberName(m.state.ID)
	}
	return m.cfg.Address
}

func (m *Manager) peerURL() string {
	return (&url.URL{Scheme: "https", Host: net.JoinHostPort(m.host(), strconv.Itoa(m.cfg.PeerPort))}).String()
}

func (m *Manager) clientURL() string {
	return (&url.URL{Scheme: "https", Host: net.JoinHostPort(m.host(), strconv.Itoa(m.cfg.ClientPort))}).String()
}

func (m *Manager) listenURL(port int) string {
	return (&url.URL{Scheme: "https", Host: net.JoinHostPort(m.cfg.Address, strconv.Itoa(port))}).String()
}

// listenClientURLs are where etcd serves clients: the node's address and,
// for the local API server, LocalClientAddress.
func (m *Manager) listenClientURLs() []string {
	urls := []string{m.listenURL(m.cfg.ClientPort)}
	if a := m.cfg.LocalClientAddress; a != "" && !net.ParseIP(a).Equal(net.ParseIP(m.cfg.Address)) {
		urls = append(urls, (&url.URL{Scheme: "https", Host: net.JoinHostPort(a, strconv.Itoa(m.cfg.ClientPort))}).String())
	}
	return urls
}

func (m *Manager) etcdDataDir() string { return filepath.Join(m.cfg.DataDir, "etcd") }

// dataDirEmpty reports whether no etcd member data is on disk.
func (m *Manager) dataDirEmpty() bool {
	_, err := os.Stat(filepath.Join(m.etcdDataDir(), "member"))
	return errors.Is(err, os.ErrNotExist)
}

// Close stops the loop, the peer server and etcd, in that order, and waits.
// Safe to call twice.
func (m *Manager) Close() error {
	var errs []error
	m.once.Do(func() {
		m.mu.Lock()
		m.closing = true
		m.mu.Unlock()
		m.cancel()
		<-m.done
		// No backup is written after the lease is given up.
		m.stopBackups()
		ctx, cancel := context.WithTimeout(context.Background(), 2*m.cfg.PeerTimeout)
		defer cancel()
		if err := m.lease.Release(ctx); err != nil {
			errs = append(errs, err)
		}
		if err := m.server.Close(); err != nil {
			errs = append(errs, err)
		}
		m.client.Close()
		m.opMu.Lock()
		m.mu.Lock()
		p := m.proc
		m.proc = nil
		m.mu.Unlock()
		if p != nil {
			sctx, scancel := context.WithTimeout(context.Background(), 15*time.Second)
			if err := p.Stop(sctx); err != nil {
				errs = append(errs, err)
			}
			scancel()
		}
		m.opMu.Unlock()
		m.closeClients()
		m.met.unregister()
	})
	return errors.Join(errs...)
}

// Kill simulates the machine dying: the loop and server stop, etcd is
// killed with SIGKILL, nothing is released. For tests.
func (m *Manager) Kill() {
	m.once.Do(func() {
		m.mu.Lock()
		m.closing = true
		p := m.proc
		m.proc = nil
		m.mu.Unlock()
		if p != nil {
			p.Kill()
		}
		m.cancel()
		<-m.done
		m.stopBackups()
		_ = m.server.Close()
		m.client.Close()
		m.killStray()
		m.closeClients()
		m.met.unregister()
	})
}

// killStray kills an etcd started by a command that raced with Kill.
func (m *Manager) killStray() {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	m.mu.Lock()
	p := m.proc
	m.proc = nil
	m.mu.Unlock()
	if p != nil {
		p.Kill()
	}
}

// EtcdPid returns the local etcd's process id, or 0.
func (m *Manager) EtcdPid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return 0
	}
	return m.proc.Pid()
}

func (m *Manager) closeClients() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, c := range m.etcdClients {
		_ = c.Close()
		delete(m.etcdClients, k)
	}
	if m.localClient != nil {
		_ = m.localClient.Close()
		m.localClient = nil
	}
}

// run is the loop; a panic in one tick is logged with its stack and the
// loop goes on.
func (m *Manager) run(ctx context.Context) {
	defer close(m.done)
	kept := make(chan struct{})
	go func() {
		defer close(kept)
		m.keepLease(ctx)
	}()
	defer func() { <-kept }()
	t := time.NewTicker(m.cfg.Tick)
	defer t.Stop()
	for {
		m.safeTick(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.elect.wake:
		}
	}
}

func (m *Manager) safeTick(ctx context.Context) {
	defer func() {
		if r := recover(); r != nil {
			m.logger.Error("reconcile panicked", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	tctx, cancel := context.WithTimeout(ctx, m.tickTimeout())
	defer cancel()
	if err := m.tick(tctx); err != nil && ctx.Err() == nil {
		m.logger.Warn("reconcile", "err", err)
		m.mu.Lock()
		m.status.LastError = err.Error()
		m.mu.Unlock()
	}
}

// loadCAs loads (or creates) the CAs from the store. Until it succeeds the
// instance cannot issue certificates.
func (m *Manager) loadCAs(ctx context.Context) error {
	mgr, peers, clients, err := loadCAs(ctx, m.ks, m.cfg.EtcdCluster)
	if err != nil {
		return err
	}
	m.certs.setCAs(mgr, peers, clients)
	return nil
}
