package manager

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/identity"
	"github.com/kopsnode/agents/etcd-manager/peer"
	"github.com/kopsnode/agents/etcd-manager/quorum"
	"github.com/kopsnode/agents/etcd-manager/restore"
	"github.com/kopsnode/agents/pkg/store"
)

// Quorum loss. The leader rule (leaseIntent) keeps an instance that
// cannot reach a quorum of the spec's managers from leading, and a leader
// needs a healthy etcd quorum to change membership: when a majority of
// members is lost for good (their machines and disks gone), nothing moves
// on its own. That is on purpose: from one side of a partition a lost
// majority looks the same as one that is merely unreachable.
//
// The operator decides, with `etcd-manager-ctl recover-quorum`, which
// queues a recover-quorum command naming a surviving member. The rule for
// that command replaces the leader rule:
//
//   - the named member's instance executes it, whether or not it reaches
//     a quorum of managers: it takes the leader lease (a leader that still
//     renews it, on the majority side of a partition, keeps it, and the
//     recovery waits: that is the fence), claims the command
//     (create-if-absent), checks that its etcd has no raft leader, keeps
//     its data directory aside (a copy), restarts its etcd once with
//     --force-new-cluster and then normally;
//   - every other instance that reaches the named one stops leading and
//     does not take the lease while the command is pending, so the lease
//     is free for it;
//   - afterwards the ordinary rules apply: once a quorum of managers is
//     reachable (replacement machines started), the leader adds them as
//     learners and promotes them.
//
// While the quorum is in doubt (fewer healthy etcd members among the
// reachable instances than a quorum), every instance shows in its status
// the plan it would follow and writes a report of itself to the store,
// which the ctl reads to print the same plan.

// quorumState is this instance's quorum-loss memory, guarded by m.mu.
type quorumState struct {
	plan         *quorum.Plan
	planErr      string
	reportedAt   time.Time
	reported     bool
	newest       *backup.Meta
	newestReadAt time.Time
	// forceNext makes the next etcd start use --force-new-cluster.
	forceNext bool
	// recovering is the recover-quorum command this instance runs.
	recovering string
}

// QuorumLossStatus is the quorum part of the status document, present
// while the quorum is in doubt.
type QuorumLossStatus struct {
	Plan  *quorum.Plan `json:"plan,omitempty"`
	Error string       `json:"error,omitempty"`
	// Recovering is the recover-quorum command this instance is running.
	Recovering string `json:"recovering,omitempty"`
}

func (m *Manager) quorumStatusLocked() *QuorumLossStatus {
	q := m.quorum
	if q.recovering == "" && q.planErr == "" && (q.plan == nil || !q.plan.Lost) {
		return nil
	}
	return &QuorumLossStatus{Plan: q.plan, Error: q.planErr, Recovering: q.recovering}
}

// takeForceNewCluster is read by startEtcdLocked: true once after a
// recovery asked for it.
func (m *Manager) takeForceNewCluster() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.quorum.forceNext
	m.quorum.forceNext = false
	return f
}

// localRaftPosition is how far the local member got, asked of etcd even
// without a raft leader (Status is answered locally); zeros when etcd does
// not answer.
func (m *Manager) localRaftPosition(ctx context.Context) (index, term uint64, rev int64) {
	c, err := m.localEtcdClient()
	if err != nil || len(c.Endpoints()) == 0 {
		return 0, 0, 0
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.PeerTimeout/2)
	defer cancel()
	resp, err := c.Status(ctx, c.Endpoints()[0])
	if err != nil {
		return 0, 0, 0
	}
	return resp.RaftIndex, resp.RaftTerm, resp.Header.Revision
}

func reportOf(i peer.Info, reachable []string, now time.Time) quorum.Report {
	return quorum.Report{ID: i.ID, Observed: now.UTC(), ClusterToken: i.ClusterToken, DataDirEmpty: i.DataDirEmpty, EtcdRunning: i.EtcdRunning,
		Healthy: i.EtcdHealthy && !i.EtcdLearner, RaftIndex: i.RaftIndex, RaftTerm: i.RaftTerm, Revision: i.Revision, Reachable: reachable}
}

// quorumLossTick runs on every tick before the election. handled says the
// tick is done (a recover-quorum command decided the leadership). It only
// reads the store when the quorum is in doubt here: this instance's own
// member has no raft leader, or it is the leader or the next one and the
// healthy members it reaches are fewer than a quorum.
func (m *Manager) quorumLossTick(ctx context.Context, spec control.Spec, infos map[string]peer.Info) (handled bool, err error) {
	self := m.ID()
	m.mu.Lock()
	token := m.state.ClusterToken
	m.mu.Unlock()
	healthy := 0
	for _, i := range infos {
		if i.EtcdHealthy && !i.EtcdLearner {
			healthy++
		}
	}
	holding, _ := m.lease.IsLeader()
	want, _ := leaseIntent(self, infos, spec.MemberCount, holding, m.expiredHolder())
	memberInDoubt := token != "" && !infos[self].EtcdHealthy
	leaderInDoubt := (want || holding) && healthy < control.Quorum(spec.MemberCount)
	// A member in a restore (stopped, restoring, quarantined) has no
	// quorum on purpose: the restore, not this, is in charge.
	inRestore := false
	if r := infos[self].Restore; r != nil && r.Step != "" && r.Step != string(restore.StepOpen) {
		inRestore = true
	}
	if (!memberInDoubt && !leaderInDoubt) || inRestore {
		m.clearQuorumLoss(ctx, self)
		return false, nil
	}
	now := m.now()
	reachable := sortedIDs(infos)
	if token != "" {
		var reports []quorum.Report
		for _, id := range reachable {
			reports = append(reports, reportOf(infos[id], reachable, now))
		}
		plan, perr := quorum.MakePlan(spec.MemberCount, token, reports, nil, quorum.Choice{})
		if perr == nil && plan.Lost && plan.Source == quorum.SourceNone {
			// Only then does the newest backup matter: listing the
			// backups reads every meta object.
			plan, perr = quorum.MakePlan(spec.MemberCount, token, reports, m.newestBackup(ctx), quorum.Choice{})
		}
		m.mu.Lock()
		m.quorum.plan = &plan
		m.quorum.planErr = ""
		if perr != nil {
			m.quorum.planErr = perr.Error()
		}
		due := plan.Lost && now.Sub(m.quorum.reportedAt) >= m.cfg.LeaseDuration
		m.mu.Unlock()
		if due {
			// The ctl cannot reach the instances: the survivors say
			// where they are through the store.
			if err := quorum.WriteReport(ctx, m.cfg.Store, m.layout, reportOf(infos[self], reachable, now)); err != nil {
				m.logger.Warn("writing the quorum-loss report", "err", err)
			} else {
				m.mu.Lock()
				m.quorum.reportedAt, m.quorum.reported = now, true
				m.mu.Unlock()
			}
		}
	}
	cmds, err := control.PendingCommands(ctx, m.cfg.Store, m.layout)
	if err != nil {
		return false, err
	}
	for _, c := range cmds {
		if c.Kind != control.KindRecoverQuorum {
			continue
		}
		target := c.Args["member"]
		switch {
		case target == self && token != "":
			return true, m.recoverQuorum(ctx, c)
		case target != "" && infos[target].ID == target:
			// Make way: the named instance takes the lease.
			m.stepDown(ctx, fmt.Sprintf("recover-quorum command %s names %s", c.ID, target))
			if _, err := m.lease.Observe(ctx); err != nil {
				return true, err
			}
			m.setLeader(false, 0)
			m.markReconciled()
			return true, nil
		}
	}
	return false, nil
}

// newestBackup is the newest full backup, read from the store at most
// every two minutes while the quorum is in doubt.
func (m *Manager) newestBackup(ctx context.Context) *backup.Meta {
	m.mu.Lock()
	n, at := m.quorum.newest, m.quorum.newestReadAt
	if g := m.backups.lastGood; g != nil && (n == nil || g.Started.After(n.Started)) {
		n = g
	}
	m.mu.Unlock()
	if !at.IsZero() && m.now().Sub(at) < 2*time.Minute {
		return n
	}
	lctx, cancel := context.WithTimeout(ctx, m.cfg.PeerTimeout)
	defer cancel()
	ls, err := backup.List(lctx, m.backupStore(), m.layout)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.quorum.newestReadAt = m.now()
	if err == nil && len(ls.Backups) > 0 {
		b := ls.Backups[0]
		m.quorum.newest = &b
		if n == nil || b.Started.After(n.Started) {
			n = &b
		}
	}
	return n
}

func (m *Manager) clearQuorumLoss(ctx context.Context, self string) {
	m.mu.Lock()
	reported := m.quorum.reported
	m.quorum.plan, m.quorum.planErr, m.quorum.reported = nil, "", false
	m.mu.Unlock()
	if reported {
		if err := quorum.DeleteReport(ctx, m.cfg.Store, m.layout, self); err != nil {
			m.logger.Debug("deleting the quorum-loss report", "err", err)
		}
	}
}

// recoverQuorum runs a recover-quorum command that names this instance.
// It returns nil when it must wait (the lease is held by another) or the
// command was claimed by another; the result says how it ended.
func (m *Manager) recoverQuorum(ctx context.Context, c control.Command) error {
	isLeader, term, err := m.lease.Acquire(ctx)
	if err != nil {
		return err
	}
	if !isLeader {
		cur := m.lease.Current()
		m.logger.Warn("recover-quorum waits for the leader lease: another instance holds and renews it, so a quorum may still exist on its side",
			"command", c.ID, "holder", cur.Holder, "term", cur.Term)
		return nil
	}
	err = control.ClaimCommand(ctx, m.cfg.Store, m.layout, c.ID, control.Claim{LeaderID: m.ID(), LeaderTerm: term, Claimed: m.now().UTC()})
	if errors.Is(err, store.ErrPrecondition) {
		return nil
	}
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.quorum.recovering = c.ID
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.quorum.recovering = ""
		m.mu.Unlock()
	}()
	m.logger.Warn("recovering the etcd quorum from this member", "command", c.ID, "term", term)
	// The recovery outlives the tick's deadline (the lease keeper renews
	// the lease meanwhile) but not the manager: Close cancels loopCtx.
	base := m.loopCtx
	if base == nil {
		base = context.WithoutCancel(ctx)
	}
	rctx, cancel := context.WithTimeout(base, 5*time.Minute)
	defer cancel()
	detail, rerr := m.forceNewCluster(rctx, c)
	if rerr != nil {
		m.logger.Error("recover-quorum failed", "command", c.ID, "err", rerr)
	} else {
		m.logger.Warn("etcd quorum recovered: this member is a one-member cluster; replacements join as learners", "command", c.ID, "detail", detail)
	}
	m.writeCommandResult(c.ID, detail, rerr)
	return nil
}

// forceNewCluster makes the local member's data a one-member cluster.
func (m *Manager) forceNewCluster(ctx context.Context, c control.Command) (string, error) {
	created, ok, err := control.ReadCreated(ctx, m.cfg.Store, m.layout)
	if err != nil {
		return "", err
	}
	m.mu.Lock()
	st := m.state
	m.mu.Unlock()
	switch {
	case !ok:
		return "", fmt.Errorf("no cluster was created (%s is absent): nothing to recover", m.layout.CreatedKey())
	case st.ClusterToken != created.ClusterToken:
		return "", fmt.Errorf("this member belongs to cluster %q, not to the created cluster %q; nothing changed", st.ClusterToken, created.ClusterToken)
	case m.dataDirEmpty():
		return "", fmt.Errorf("%s holds no etcd data; nothing changed", m.etcdDataDir())
	}
	if _, _, err := m.localHealth(ctx); err == nil {
		return "", errors.New("the local etcd has a raft leader: the cluster has a quorum; nothing changed")
	}
	index, _, rev := m.localRaftPosition(ctx)
	m.opMu.Lock()
	defer m.opMu.Unlock()
	m.mu.Lock()
	p := m.proc
	m.proc = nil
	m.mu.Unlock()
	if p != nil {
		sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := p.Stop(sctx)
		cancel()
		if err != nil {
			return "", fmt.Errorf("stopping etcd: %w", err)
		}
	}
	m.closeLocalClient()
	aside := filepath.Join(m.cfg.DataDir, "etcd-before-recover-quorum-"+m.now().UTC().Format("20060102T150405"))
	if err := copyTree(m.etcdDataDir(), aside); err != nil {
		// Nothing changed yet: etcd is started again as it was.
		serr := m.startEtcdLocked()
		return "", errors.Join(fmt.Errorf("keeping the data aside in %s: %w; etcd restarted unchanged", aside, err), serr)
	}
	m.mu.Lock()
	m.quorum.forceNext = true
	m.mu.Unlock()
	if err := m.startEtcdLocked(); err != nil {
		return "", fmt.Errorf("starting etcd with --force-new-cluster: %w (the data before is in %s)", err, aside)
	}
	if err := m.waitLocalHealthy(ctx); err != nil {
		return "", fmt.Errorf("etcd started with --force-new-cluster did not become healthy: %w (the data before is in %s)", err, aside)
	}
	// Once is enough: restarted with the flag, etcd would drop every
	// member added since. From now on it starts as a plain member of its
	// one-member cluster.
	m.mu.Lock()
	p = m.proc
	m.proc = nil
	m.mu.Unlock()
	if p != nil {
		sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := p.Stop(sctx)
		cancel()
		if err != nil {
			return "", fmt.Errorf("stopping etcd after --force-new-cluster: %w", err)
		}
	}
	m.closeLocalClient()
	st.InitialCluster = st.ID + "=" + m.peerURL()
	st.InitialClusterState = "existing"
	if err := identity.Save(m.cfg.DataDir, st); err != nil {
		return "", err
	}
	m.mu.Lock()
	m.state = st
	m.mu.Unlock()
	if err := m.startEtcdLocked(); err != nil {
		return "", err
	}
	if err := m.waitLocalHealthy(ctx); err != nil {
		return "", fmt.Errorf("etcd restarted after --force-new-cluster did not become healthy: %w", err)
	}
	return fmt.Sprintf("recovered from member %s at raft index %d, revision %d; the other members were removed; the data before is kept in %s", st.ID, index, rev, aside), nil
}

func (m *Manager) waitLocalHealthy(ctx context.Context) error {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	var last error
	for {
		if _, _, err := m.localHealth(ctx); err == nil {
			return nil
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), last)
		case <-t.C:
		}
	}
}

// copyTree copies the directory src to dst (which must not exist),
// keeping modes, and syncs the files.
func copyTree(src, dst string) error {
	if _, err := os.Stat(dst); err == nil {
		return fmt.Errorf("%s exists", dst)
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(target, info.Mode().Perm()|0o700)
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, info.Mode().Perm())
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		if err := out.Sync(); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
}

// refuseRecoverQuorum ends a recover-quorum command that reached the
// leader's command queue: the leader only runs commands when etcd listed
// its members, so the cluster has a quorum and recovering would throw
// data away (the named member may be on the minority side of a
// partition).
func (m *Manager) refuseRecoverQuorum(c control.Command) {
	err := fmt.Errorf("the etcd cluster has a quorum (leader %s lists its members): recover-quorum refused, nothing changed", m.ID())
	m.logger.Warn("refusing recover-quorum: the cluster has a quorum", "command", c.ID, "member", c.Args["member"])
	m.writeCommandResult(c.ID, "", err)
}

// noRaftLeaderError is localHealth's answer when the local etcd answers
// without a raft leader (it is errNoRaftLeader), with how far the member
// got: Info reports it for the quorum-loss plan.
type noRaftLeaderError struct {
	index, term uint64
	rev         int64
}

func (e *noRaftLeaderError) Error() string        { return errNoRaftLeader.Error() }
func (e *noRaftLeaderError) Is(target error) bool { return target == errNoRaftLeader }
