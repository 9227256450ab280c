package manager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kopsnode/agents/etcd-manager/etcdprocess"
	"github.com/kopsnode/agents/etcd-manager/identity"
	"github.com/kopsnode/agents/etcd-manager/peer"
	"github.com/kopsnode/agents/pkg/config"
)

// Info implements peer.Node.
func (m *Manager) Info(ctx context.Context) (peer.Info, error) {
	m.mu.Lock()
	st := m.state
	running := m.proc != nil && m.proc.Running()
	cur := m.lease.Current()
	m.mu.Unlock()
	info := peer.Info{
		ID:           st.ID,
		ManagerAddr:  m.managerAddr(),
		PeerURLs:     []string{m.peerURL()},
		ClientURLs:   []string{m.clientURL()},
		ClusterToken: st.ClusterToken,
		EtcdRunning:  running,
		EtcdVersion:  st.EtcdVersion,
		DataDirEmpty: m.dataDirEmpty(),
		Leader:       cur.Holder,
		LeaderTerm:   cur.Term,
		Restore:      m.restoreInfo(),
	}
	if exp := m.certs.etcdExpiry(); !exp.IsZero() {
		info.CertNotAfter = exp.UTC()
	}
	if running {
		if id, learner, err := m.localHealth(ctx); err == nil {
			info.EtcdHealthy = true
			info.MemberID = strconv.FormatUint(id, 16)
			info.EtcdLearner = learner
		} else if nl := (*noRaftLeaderError)(nil); errors.As(err, &nl) {
			// No raft leader: how far this member got (quorumloss.go),
			// from the same Status answer (no second wait).
			info.RaftIndex, info.RaftTerm, info.Revision = nl.index, nl.term, nl.rev
		}
	}
	return info, nil
}

// errNoRaftLeader: the local etcd answers but has no raft leader.
var errNoRaftLeader = errors.New("etcd has no raft leader")

// localHealth asks the local etcd for its status.
func (m *Manager) localHealth(ctx context.Context) (memberID uint64, learner bool, err error) {
	c, err := m.localEtcdClient()
	if err != nil {
		return 0, false, err
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.PeerTimeout/2)
	defer cancel()
	resp, err := c.Status(ctx, m.localClientURL())
	if err != nil {
		return 0, false, err
	}
	if resp.Leader == 0 {
		// Serving but not (yet) part of a working raft group (etcd
		// also lists "no leader" in its errors then).
		return 0, false, &noRaftLeaderError{index: resp.RaftIndex, term: resp.RaftTerm, rev: resp.Header.Revision}
	}
	if len(resp.Errors) > 0 {
		return 0, false, fmt.Errorf("etcd reports: %v", resp.Errors)
	}
	return resp.Header.MemberId, resp.IsLearner, nil
}

func (m *Manager) localEtcdClient() (*clientv3.Client, error) {
	m.mu.Lock()
	c := m.localClient
	m.mu.Unlock()
	if c != nil {
		return c, nil
	}
	c, err := m.newEtcdClient([]string{m.localClientURL()})
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.localClient != nil {
		_ = c.Close()
		return m.localClient, nil
	}
	m.localClient = c
	return c, nil
}

func (m *Manager) newEtcdClient(endpoints []string) (*clientv3.Client, error) {
	tlsCfg, err := m.certs.etcdClientTLS()
	if err != nil {
		return nil, err
	}
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		TLS:         tlsCfg,
		DialTimeout: m.cfg.PeerTimeout,
		Logger:      zap.NewNop(),
	})
}

// checkTerm refuses commands from a leader older than one already obeyed.
func (m *Manager) checkTerm(id string, term int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if term < m.maxTerm {
		return fmt.Errorf("refusing command from %s: leader term %d is older than term %d already seen", id, term, m.maxTerm)
	}
	m.maxTerm = term
	return nil
}

// Join implements peer.Node: persist the membership, then start etcd.
func (m *Manager) Join(ctx context.Context, req peer.JoinRequest) error {
	if err := m.checkTerm(req.LeaderID, req.LeaderTerm); err != nil {
		return err
	}
	if req.ClusterToken == "" || req.InitialCluster == "" || (req.State != "new" && req.State != "existing") {
		return fmt.Errorf("join: clusterToken, initialCluster and state (new or existing) are required")
	}
	if err := config.ValidateEtcdVersion(req.EtcdVersion); err != nil {
		return fmt.Errorf("join: etcdVersion: %w", err)
	}
	if _, err := etcdprocess.BinaryPath(m.cfg.BinDirRoot, req.EtcdVersion); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	m.opMu.Lock()
	defer m.opMu.Unlock()
	m.mu.Lock()
	st := m.state
	running := m.proc != nil && m.proc.Running()
	m.mu.Unlock()
	if st.ClusterToken == req.ClusterToken && running {
		return nil // already done: the leader repeats commands
	}
	if st.ClusterToken != "" && st.ClusterToken != req.ClusterToken {
		return fmt.Errorf("join: member of cluster %s; it must leave first", st.ClusterToken)
	}
	if st.ClusterToken == "" && !m.dataDirEmpty() {
		return fmt.Errorf("join: %s holds etcd data of no known cluster; refusing to use it (move it aside)", m.etcdDataDir())
	}
	st.ClusterToken = req.ClusterToken
	st.EtcdVersion = req.EtcdVersion
	st.InitialCluster = req.InitialCluster
	st.InitialClusterState = req.State
	if err := identity.Save(m.cfg.DataDir, st); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	m.mu.Lock()
	m.state = st
	m.mu.Unlock()
	m.logger.Info("joining etcd cluster", "leader", req.LeaderID, "term", req.LeaderTerm, "state", req.State, "initialCluster", req.InitialCluster)
	return m.startEtcdLocked()
}

// Leave implements peer.Node: stop etcd, move its data aside, become idle.
func (m *Manager) Leave(ctx context.Context, req peer.LeaveRequest) error {
	if err := m.checkTerm(req.LeaderID, req.LeaderTerm); err != nil {
		return err
	}
	m.opMu.Lock()
	defer m.opMu.Unlock()
	m.mu.Lock()
	st := m.state
	p := m.proc
	m.proc = nil
	m.mu.Unlock()
	if req.ClusterToken != "" && st.ClusterToken != "" && req.ClusterToken != st.ClusterToken {
		return fmt.Errorf("leave: member of cluster %s, not %s", st.ClusterToken, req.ClusterToken)
	}
	if p != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		err := p.Stop(sctx)
		cancel()
		if err != nil {
			return fmt.Errorf("leave: stopping etcd: %w", err)
		}
	}
	m.closeLocalClient()
	if !m.dataDirEmpty() || dirExists(m.etcdDataDir()) {
		aside := filepath.Join(m.cfg.DataDir, "etcd-removed-"+m.now().UTC().Format("20060102T150405.000000000"))
		if err := os.Rename(m.etcdDataDir(), aside); err != nil {
			return fmt.Errorf("leave: moving %s aside: %w", m.etcdDataDir(), err)
		}
		m.logger.Info("left etcd cluster; data moved aside", "leader", req.LeaderID, "to", aside)
	}
	st.ClusterToken, st.InitialCluster, st.InitialClusterState = "", "", ""
	if err := identity.Save(m.cfg.DataDir, st); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	m.mu.Lock()
	m.state = st
	m.mu.Unlock()
	return nil
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func (m *Manager) closeLocalClient() {
	m.mu.Lock()
	c := m.localClient
	m.localClient = nil
	m.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

// startEtcdLocked starts etcd from the saved state. opMu must be held (or
// the manager not yet running).
func (m *Manager) startEtcdLocked() error {
	m.mu.Lock()
	st := m.state
	old := m.proc
	closing := m.closing
	m.mu.Unlock()
	if closing {
		return errors.New("etcd-manager is shutting down")
	}
	if old != nil && old.Running() {
		return nil
	}
	if st.ClusterToken == "" {
		return errors.New("not a member of any cluster")
	}
	cfg := etcdprocess.Config{
		BinDirRoot:          m.cfg.BinDirRoot,
		Version:             st.EtcdVersion,
		Name:                st.ID,
		DataDir:             m.etcdDataDir(),
		ListenPeerURLs:      []string{m.listenURL(m.cfg.PeerPort)},
		AdvertisePeerURLs:   []string{m.peerURL()},
		ListenClientURLs:    m.listenClientURLs(),
		AdvertiseClientURLs: []string{m.clientURL()},
		InitialCluster:      st.InitialCluster,
		InitialClusterState: st.InitialClusterState,
		InitialClusterToken: st.ClusterToken,
		PeerTLS:             m.certs.peerFiles(),
		ClientTLS:           m.certs.serverFiles(),
		LogLevel:            m.cfg.EtcdLogLevel,
		Logger:              m.logger,
		ForceNewCluster:     m.takeForceNewCluster(),
	}
	if err := m.restoreEtcdConfig(&cfg); err != nil {
		return err
	}
	p, err := etcdprocess.Start(cfg)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.proc = p
	m.lastRestart = m.now()
	m.mu.Unlock()
	return nil
}

// supervise restarts a member's etcd that exited, at most once per lease
// duration.
func (m *Manager) supervise() {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	m.mu.Lock()
	st := m.state
	p := m.proc
	last := m.lastRestart
	m.mu.Unlock()
	if st.ClusterToken == "" || (p != nil && p.Running()) {
		return
	}
	if m.now().Sub(last) < m.cfg.LeaseDuration {
		return
	}
	if p != nil {
		m.logger.Warn("etcd exited; restarting", "err", p.ExitErr())
	}
	m.closeLocalClient()
	if err := m.startEtcdLocked(); err != nil {
		m.logger.Error("restarting etcd", "err", err)
		m.mu.Lock()
		m.lastRestart = m.now()
		m.mu.Unlock()
	}
}

// Rotate implements peer.Node: reissue the etcd certificates and restart
// etcd so it loads them. The leader asks one member at a time.
func (m *Manager) Rotate(ctx context.Context, req peer.RotateRequest) error {
	if err := m.checkTerm(req.LeaderID, req.LeaderTerm); err != nil {
		return err
	}
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if err := m.certs.issueEtcd(m.subject()); err != nil {
		return err
	}
	m.mu.Lock()
	p := m.proc
	m.proc = nil
	m.mu.Unlock()
	if p != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		err := p.Stop(sctx)
		cancel()
		if err != nil {
			return fmt.Errorf("rotate: stopping etcd: %w", err)
		}
	}
	m.closeLocalClient()
	m.logger.Info("etcd certificates reissued; restarting etcd", "notAfter", m.certs.etcdExpiry())
	return m.startEtcdLocked()
}
