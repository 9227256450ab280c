package manager

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/peer"
	"github.com/kopsnode/agents/pkg/hostsfile"
)

// Status is the cluster as this instance sees it: the document served on
// /status and printed by `etcd-manager status`.
type Status struct {
	ID          string        `json:"id"`
	EtcdCluster string        `json:"etcdCluster"`
	IsLeader    bool          `json:"isLeader"`
	Leader      string        `json:"leader,omitempty"`
	LeaderTerm  int64         `json:"leaderTerm,omitempty"`
	Spec        *control.Spec `json:"spec,omitempty"`
	// EtcdVersion is the version the cluster runs (known to the leader).
	EtcdVersion string `json:"etcdVersion,omitempty"`
	// Members is the etcd member list (known to the leader).
	Members []MemberStatus `json:"members,omitempty"`
	// Peers are the reachable etcd-manager instances.
	Peers []peer.Info `json:"peers"`
	// Local is this instance.
	Local         peer.Info `json:"local"`
	LastReconcile time.Time `json:"lastReconcile"`
	LastError     string    `json:"lastError,omitempty"`
	// APIServerClientCert is the API server's etcd client certificate,
	// when --apiserver-client-cert-dir is set.
	APIServerClientCert *APIServerCertStatus `json:"apiserverClientCert,omitempty"`
	// Backups are the full backups as this instance knows them (the
	// leader takes them; the last good one is read from the store when
	// an instance becomes leader).
	Backups *BackupStatus `json:"backups,omitempty"`
	// QuorumLoss, while the etcd quorum is lost, is the recovery this
	// instance would follow (quorumloss.go).
	QuorumLoss *QuorumLossStatus `json:"quorumLoss,omitempty"`
	// Deltas is the leader's delta chain: last durable revision and RPO.
	Deltas *DeltaStatus `json:"deltas,omitempty"`
}

// MemberStatus is one etcd member.
type MemberStatus struct {
	Name       string   `json:"name"`
	ID         string   `json:"id"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs,omitempty"`
	Learner    bool     `json:"learner,omitempty"`
	Healthy    bool     `json:"healthy"`
}

// Status returns the current status.
func (m *Manager) Status(ctx context.Context) (Status, error) {
	local, _ := m.Info(ctx)
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.status
	s.ID = m.state.ID
	s.EtcdCluster = m.cfg.EtcdCluster
	s.Local = local
	s.LastReconcile = m.lastReconcile
	cur := m.lease.Current()
	s.Leader, s.LeaderTerm = cur.Holder, cur.Term
	if !s.IsLeader {
		s.Members = nil
	}
	s.Peers = append([]peer.Info(nil), s.Peers...)
	s.APIServerClientCert = m.apiserverStatusLocked()
	s.Backups = m.backupStatusLocked()
	s.QuorumLoss = m.quorumStatusLocked()
	s.Deltas = m.deltaStatus()
	return s, nil
}

// IsLeader reports whether this instance holds the leader lease.
func (m *Manager) IsLeader() bool {
	ok, _ := m.lease.IsLeader()
	return ok
}

// Health is nil when the manager loop ran recently and, for members, the
// local etcd answers.
func (m *Manager) Health(ctx context.Context) error {
	m.mu.Lock()
	last := m.lastReconcile
	member := m.state.ClusterToken != ""
	m.mu.Unlock()
	if age := m.now().Sub(last); age > 3*m.cfg.LeaseDuration {
		return errorf("last successful reconcile %s ago", age.Round(time.Second))
	}
	if member {
		if _, _, err := m.localHealth(ctx); err != nil {
			return errorf("local etcd: %v", err)
		}
	}
	return nil
}

func (m *Manager) setLeader(ok bool, term int64) {
	m.mu.Lock()
	m.status.IsLeader = ok
	m.mu.Unlock()
	m.met.setLeader(ok)
	m.syncBackupRunner(ok, term)
	if !ok {
		// Only the leader knows the member list; followers report zero
		// rather than a stale count.
		m.met.members.Set(0)
		m.met.healthy.Set(0)
	}
}

func (m *Manager) markReconciled() {
	m.mu.Lock()
	m.lastReconcile = m.now()
	m.status.LastError = ""
	m.mu.Unlock()
}

// hostsLockWait bounds a wait for the hosts file lock, which another agent
// (gossip, the other etcd-manager) holds for a moment while it rewrites its
// own block.
const hostsLockWait = 10 * time.Second

// writeHosts keeps the names of the reachable peers in this etcd cluster's
// block of the hosts file, through pkg/hostsfile (the one writer every
// agent shares). Peers that vanish stay until seen again elsewhere: only
// the records of peers currently reachable are written, plus this
// instance.
func (m *Manager) writeHosts(ctx context.Context, infos map[string]peer.Info) {
	if m.cfg.HostsFile == "" {
		return
	}
	names := map[string][]netip.Addr{}
	key := ""
	for _, id := range sortedIDs(infos) {
		host, _, err := splitHost(infos[id].ManagerAddr)
		if err != nil {
			continue
		}
		a, err := netip.ParseAddr(host)
		if err != nil {
			m.logger.Warn("a peer's address is not an IP address; leaving it out of the hosts file", "peer", id, "addr", infos[id].ManagerAddr)
			continue
		}
		names[m.cfg.MemberName(id)] = append(names[m.cfg.MemberName(id)], a)
		key += m.cfg.MemberName(id) + "=" + a.String() + ";"
	}
	m.mu.Lock()
	same := key == m.hostsWritten
	m.mu.Unlock()
	if same {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, hostsLockWait)
	defer cancel()
	h := hostsfile.Hosts{Path: m.cfg.HostsFile}
	if _, err := h.Update(ctx, hostsfile.Named("etcd-manager "+m.cfg.EtcdCluster), hostsfile.ByName(names)); err != nil {
		m.logger.Warn("updating hosts file", "err", err)
		return
	}
	m.mu.Lock()
	m.hostsWritten = key
	m.mu.Unlock()
}

// rotateOwnManagerCert reissues the peer-protocol certificate before it
// expires; the TLS configs pick it up on the next handshake.
func (m *Manager) rotateOwnManagerCert() {
	if exp := m.certs.managerExpiry(); exp.Sub(m.now()) < m.cfg.RenewBefore {
		if err := m.certs.issueManager(m.subject()); err != nil {
			m.logger.Warn("reissuing etcd-manager certificate", "err", err)
		}
	}
}

type metrics struct {
	reg      prometheus.Registerer
	restore  *restoreMetrics
	cs       []prometheus.Collector
	isLeader prometheus.Gauge
	members  prometheus.Gauge
	healthy  prometheus.Gauge
	version  *prometheus.GaugeVec
	// apiserverExpiry is nil without an API server certificate directory.
	apiserverExpiry prometheus.Gauge
	// Full backups (backups.go).
	backupDuration prometheus.Gauge
	backupSize     prometheus.Gauge
	backupsTotal   prometheus.Counter
	backupBytes    prometheus.Counter
	backupFailures *prometheus.CounterVec
	mu             sync.Mutex // guards lastVer
	lastVer        string

	// Retention (retention.go).
	retention *retentionMetrics
	// Verification by test restore (verify.go).
	verify *verifyMetrics
	// Delta segments (deltas.go).
	delta *deltaMetrics
}

func newMetrics(reg prometheus.Registerer, m *Manager) *metrics {
	labels := prometheus.Labels{"etcd_cluster": m.cfg.EtcdCluster}
	mt := &metrics{
		reg:      reg,
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcd_manager_is_leader", Help: "1 when this instance is the etcd-manager leader.", ConstLabels: labels}),
		members:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcd_manager_members", Help: "etcd members (as seen by the leader).", ConstLabels: labels}),
		healthy:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcd_manager_healthy_members", Help: "Healthy etcd members (as seen by the leader).", ConstLabels: labels}),
		version:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "etcd_manager_etcd_version_info", Help: "The etcd version the cluster runs (value 1).", ConstLabels: labels}, []string{"version"}),
	}
	since := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "etcd_manager_seconds_since_last_reconcile", Help: "Seconds since the last successful reconcile.", ConstLabels: labels}, func() float64 {
		m.mu.Lock()
		last := m.lastReconcile
		m.mu.Unlock()
		if last.IsZero() {
			return -1
		}
		return m.now().Sub(last).Seconds()
	})
	mt.backupDuration = prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcd_manager_backup_duration_seconds", Help: "Duration of the last successful full backup taken by this instance.", ConstLabels: labels})
	mt.backupSize = prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcd_manager_backup_stored_bytes", Help: "Stored (compressed) size of the last successful full backup taken by this instance.", ConstLabels: labels})
	mt.backupsTotal = prometheus.NewCounter(prometheus.CounterOpts{Name: "etcd_manager_backups_total", Help: "Full backups taken by this instance.", ConstLabels: labels})
	mt.backupBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "etcd_manager_backup_bytes_total", Help: "Bytes of full backups written to the store by this instance.", ConstLabels: labels})
	mt.backupFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "etcd_manager_backup_failures_total", Help: "Failed full backups by reason: etcd, integrity, store, local, canceled.", ConstLabels: labels}, []string{"reason"})
	for _, r := range []string{backup.ReasonEtcd, backup.ReasonIntegrity, backup.ReasonStore, backup.ReasonLocal, backup.ReasonCanceled} {
		mt.backupFailures.WithLabelValues(r)
	}
	age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "etcd_manager_backup_age_seconds", Help: "Seconds since the start of the newest good full backup this instance knows of (the leader's view; -1 when none is known).", ConstLabels: labels}, func() float64 {
		m.mu.Lock()
		g := m.backups.lastGood
		m.mu.Unlock()
		if g == nil {
			return -1
		}
		return m.now().Sub(g.Started).Seconds()
	})
	mt.cs = []prometheus.Collector{mt.isLeader, mt.members, mt.healthy, mt.version, since,
		mt.backupDuration, mt.backupSize, mt.backupsTotal, mt.backupBytes, mt.backupFailures, age}
	mt.retention = newRetentionMetrics(labels)
	mt.cs = append(mt.cs, mt.retention.collectors()...)
	mt.verify = newVerifyMetrics(m, labels)
	mt.cs = append(mt.cs, mt.verify.collectors()...)
	mt.delta = newDeltaMetrics(m, labels)
	mt.cs = append(mt.cs, mt.delta.collectors()...)
	mt.restore = newRestoreMetrics(m, labels)
	mt.cs = append(mt.cs, mt.restore.collectors()...)
	if m.cfg.APIServerClientCertDir != "" {
		mt.apiserverExpiry = prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcd_manager_apiserver_client_cert_expiry_timestamp_seconds",
			Help: "NotAfter (Unix seconds) of the API server's etcd client certificate this instance keeps; 0 until there is one.", ConstLabels: labels})
		mt.cs = append(mt.cs, mt.apiserverExpiry)
	}
	if reg != nil {
		for _, c := range mt.cs {
			if err := reg.Register(c); err != nil {
				m.logger.Warn("registering metric", "err", err)
			}
		}
	}
	return mt
}

func (mt *metrics) unregister() {
	if mt.reg == nil {
		return
	}
	for _, c := range mt.cs {
		mt.reg.Unregister(c)
	}
}

func (mt *metrics) setLeader(ok bool) {
	if ok {
		mt.isLeader.Set(1)
	} else {
		mt.isLeader.Set(0)
	}
}

func (mt *metrics) setCluster(members, healthy int, version string) {
	mt.members.Set(float64(members))
	mt.healthy.Set(float64(healthy))
	mt.mu.Lock()
	defer mt.mu.Unlock()
	if version != mt.lastVer {
		mt.version.Reset()
		mt.version.WithLabelValues(version).Set(1)
		mt.lastVer = version
	}
}

func (mt *metrics) backupDone(meta backup.Meta, took time.Duration) {
	mt.backupDuration.Set(took.Seconds())
	mt.backupSize.Set(float64(meta.StoredSize))
	mt.backupsTotal.Inc()
	mt.backupBytes.Add(float64(meta.StoredSize))
}

func (mt *metrics) backupFailed(reason string) { mt.backupFailures.WithLabelValues(reason).Inc() }

func splitHost(addr string) (string, string, error) { return net.SplitHostPort(addr) }

func errorf(format string, a ...any) error { return fmt.Errorf(format, a...) }
