package manager

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/etcdprocess"
	"github.com/kopsnode/agents/etcd-manager/identity"
	"github.com/kopsnode/agents/etcd-manager/peer"
	"github.com/kopsnode/agents/etcd-manager/restore"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/store"
)

// QuarantinePortOffset: a restored member serves clients, until the
// restore opens it, on a loopback address at its client port plus this
// (14001 for main, 14002 for events), where no API server looks.
const QuarantinePortOffset = 10000

// restoreRuntime is the manager's memory of restores: on the leader, the
// goroutine running the current restore and the restores known to be over
// (so the reconcile gate reads each finished state once); on every
// instance, its own restore record (restore.json) and whether its worker
// runs.
type restoreRuntime struct {
	mu       sync.Mutex
	finished map[string]bool
	runner   *restoreRunner
	// local is the member's record; loaded is false until it was read.
	local  *restore.Local
	loaded bool
	// working is the command the member's worker goroutine runs, "" when
	// none runs.
	working string
	// lastWait is the last waiting reason logged by the runner.
	lastWait string
}

type restoreRunner struct {
	id   string
	term int64
	done chan struct{}
}

// restoreGate is the one check at the top of the leader's reconcile: while
// a restore is in progress (or a restore command is pending and this call
// starts it) the reconcile makes no membership change and counts no
// member dead; busy says so. The restore runs in its own goroutine, owned
// by this leader term.
func (m *Manager) restoreGate(ctx context.Context, term int64) (busy bool, err error) {
	ids, err := restore.List(ctx, m.cfg.Store, m.layout)
	if err != nil {
		return true, err
	}
	for _, id := range ids {
		m.restores.mu.Lock()
		done := m.restores.finished[id]
		m.restores.mu.Unlock()
		if done {
			continue
		}
		s, _, ok, err := restore.Load(ctx, m.cfg.Store, m.layout, id)
		if err != nil {
			// An unreadable state may be a restore in progress: no
			// membership change until an operator looks.
			return true, err
		}
		if !ok {
			continue
		}
		if s.Phase.Terminal() {
			m.markRestoreFinished(id)
			continue
		}
		m.ensureRestoreRunner(id, term)
		return true, nil
	}
	cmds, err := control.PendingCommands(ctx, m.cfg.Store, m.layout)
	if err != nil {
		return false, err
	}
	for _, c := range cmds {
		if !control.IsRestoreKind(c.Kind) {
			continue
		}
		return true, m.startRestore(ctx, c, term)
	}
	return false, nil
}

func (m *Manager) markRestoreFinished(id string) {
	m.restores.mu.Lock()
	if m.restores.finished == nil {
		m.restores.finished = map[string]bool{}
	}
	m.restores.finished[id] = true
	m.restores.mu.Unlock()
}

// startRestore fences a pending restore command: its state is written
// create-if-absent (a second leader loses here), then the command is
// claimed, then this term's goroutine runs it. A command whose target
// does not parse fails at once, nothing touched.
func (m *Manager) startRestore(ctx context.Context, c control.Command, term int64) error {
	if ok, t := m.lease.IsLeader(); !ok || t != term {
		return errors.New("lost the leader lease before starting a restore")
	}
	// A retention pass that found no restore active may be deleting: the
	// restore starts at a later tick, after the pass.
	if !m.retentionPass.TryLock() {
		m.logger.Info("restore waits for a retention pass to end", "id", c.ID)
		return nil
	}
	defer m.retentionPass.Unlock()
	now := m.now().UTC()
	s := restore.State{FormatVersion: restore.FormatVersion, CommandID: c.ID, Kind: c.Kind, Phase: restore.PhaseValidating,
		Owner: restore.Owner{LeaderID: m.ID(), LeaderTerm: term}, Started: now, Updated: now}
	tgt, terr := restore.TargetOf(c)
	s.Target = tgt
	if terr != nil {
		s.Phase, s.Error = restore.PhaseFailed, terr.Error()
	}
	s.Record(now, "picked up by "+m.ID()+" in term "+strconv.FormatInt(term, 10))
	if _, err := restore.Save(ctx, m.cfg.Store, m.layout, s, ""); err != nil {
		if errors.Is(err, restore.ErrLost) {
			return nil
		}
		return err
	}
	if err := control.ClaimCommand(ctx, m.cfg.Store, m.layout, c.ID, control.Claim{LeaderID: m.ID(), LeaderTerm: term, Claimed: now}); err != nil && !errors.Is(err, store.ErrPrecondition) {
		// The state is the fence; the claim only keeps the command out
		// of the pending list. Reported, not fatal.
		m.logger.Warn("claiming a restore command", "id", c.ID, "err", err)
	}
	m.logger.Info("restore command picked up", "id", c.ID, "kind", c.Kind, "target", tgt.String(), "term", term)
	if terr != nil {
		m.logger.Error("restore refused; nothing was changed", "id", c.ID, "err", terr)
		m.writeCommandResult(c.ID, "", terr)
		m.markRestoreFinished(c.ID)
		m.met.restore.finished("failed", 0)
		return nil
	}
	m.ensureRestoreRunner(c.ID, term)
	return nil
}

// ensureRestoreRunner starts this term's goroutine for restore id unless
// it runs.
func (m *Manager) ensureRestoreRunner(id string, term int64) {
	m.restores.mu.Lock()
	defer m.restores.mu.Unlock()
	if r := m.restores.runner; r != nil && r.id == id && r.term == term {
		select {
		case <-r.done:
		default:
			return
		}
	}
	m.mu.Lock()
	closing := m.closing
	m.mu.Unlock()
	if closing || m.loopCtx == nil {
		return
	}
	r := &restoreRunner{id: id, term: term, done: make(chan struct{})}
	m.restores.runner = r
	m.backupWG.Add(1)
	go m.runRestore(m.loopCtx, r)
}

// runRestore drives one restore for one leader term: observe the members,
// decide (restore.Next), act, persist with compare-and-swap. It ends when
// the restore is over, the term ends or the manager stops; the next
// term's leader resumes from the persisted state.
func (m *Manager) runRestore(ctx context.Context, r *restoreRunner) {
	defer m.backupWG.Done()
	defer close(r.done)
	defer func() {
		if p := recover(); p != nil {
			m.logger.Error("restore goroutine panicked", "panic", p, "stack", string(debug.Stack()))
		}
	}()
	log := m.logger.With("restore", r.id, "term", r.term)
	for {
		if ctx.Err() != nil {
			return
		}
		if ok, t := m.lease.IsLeader(); !ok || t != r.term {
			log.Info("leader term ended; the next leader resumes the restore")
			return
		}
		again, err := m.restoreStep(ctx, r, log)
		if err != nil && ctx.Err() == nil {
			if errors.Is(err, restore.ErrLost) {
				log.Warn("another leader moved the restore on; stopping here", "err", err)
				return
			}
			log.Warn("restore step", "err", err)
		}
		if !again {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(m.cfg.Tick):
		}
	}
}

// restoreStep is one pass of the runner; again is false when the restore
// is over.
func (m *Manager) restoreStep(ctx context.Context, r *restoreRunner, log interface {
	Info(string, ...any)
	Warn(string, ...any)
	Error(string, ...any)
}) (again bool, err error) {
	sctx, cancel := context.WithTimeout(ctx, m.cfg.LeaseDuration)
	defer cancel()
	s, v, ok, err := restore.Load(sctx, m.cfg.Store, m.layout, r.id)
	if err != nil {
		return true, err
	}
	if !ok {
		return false, fmt.Errorf("restore state %s vanished", m.layout.RestoreKey(r.id))
	}
	if s.Phase.Terminal() {
		m.markRestoreFinished(r.id)
		return false, nil
	}
	if s.Owner.LeaderTerm != r.term || s.Owner.LeaderID != m.ID() {
		prev := s.Owner
		s.Owner = restore.Owner{LeaderID: m.ID(), LeaderTerm: r.term}
		s.Updated = m.now().UTC()
		s.Record(s.Updated, fmt.Sprintf("taken over by %s in term %d from %s (term %d)", m.ID(), r.term, prev.LeaderID, prev.LeaderTerm))
		if v, err = restore.Save(sctx, m.cfg.Store, m.layout, s, v); err != nil {
			return false, err
		}
		log.Info("resuming a restore left by an earlier leader term", "phase", s.Phase, "from", prev.LeaderID, "fromTerm", prev.LeaderTerm)
	}
	var obs map[string]restore.MemberObs
	var infos map[string]peer.Info
	if s.Phase != restore.PhaseValidating {
		infos = m.gatherAll(sctx)
		obs = restoreObs(s, infos)
	}
	act := restore.Next(s, obs)
	// The long steps (validation downloads everything) get the term's
	// context, not the pass's.
	changed, actErr := m.restoreAct(ctx, r.term, &s, act, infos, log)
	if changed {
		s.Updated = m.now().UTC()
		if _, err := restore.Save(ctx, m.cfg.Store, m.layout, s, v); err != nil {
			return false, err
		}
		switch s.Phase {
		case restore.PhaseDone:
			m.markRestoreFinished(r.id)
			m.met.restore.finished("done", s.Updated.Sub(s.Started))
			m.writeCommandResult(r.id, fmt.Sprintf("restored %s at revision %d under cluster token %s", s.Backup, s.TargetRevision, s.NewClusterToken), nil)
			log.Info("restore done; the cluster is open", "backup", s.Backup, "token", s.NewClusterToken, "took", s.Updated.Sub(s.Started).Round(time.Millisecond))
			// Verification by test restore (verify.go): the newest backup
			// is now the one taken of the old cluster before the restore,
			// the way back.
			if err := m.requestVerify("after restore " + r.id); err != nil {
				log.Warn("cannot ask for a verification after the restore", "err", err)
			}
			m.finishMembers(ctx, r.term, s, infos)
			m.afterRestore(ctx, r.term, s, infos)
			return false, nil
		case restore.PhaseFailed:
			m.markRestoreFinished(r.id)
			m.met.restore.finished("failed", s.Updated.Sub(s.Started))
			m.writeCommandResult(r.id, "", errors.New(s.Error))
			log.Error("restore failed", "err", s.Error)
			return false, nil
		}
		// A phase moved on: act on the new one at once.
		return true, actErr
	}
	return true, actErr
}

// gatherAll asks every discovered peer (and this instance) for its Info.
func (m *Manager) gatherAll(ctx context.Context) map[string]peer.Info {
	peers, err := m.cfg.Discovery.Peers(ctx)
	if err != nil {
		m.logger.Warn("discovering peers", "err", err)
	}
	return m.gather(ctx, peers)
}

func restoreObs(s restore.State, infos map[string]peer.Info) map[string]restore.MemberObs {
	obs := map[string]restore.MemberObs{}
	for _, n := range s.MemberNames() {
		i, ok := infos[n]
		if !ok {
			continue
		}
		o := restore.MemberObs{Reachable: true, Token: i.ClusterToken, Healthy: i.EtcdHealthy}
		if i.Restore != nil {
			o.CommandID, o.Step, o.Error = i.Restore.CommandID, restore.Step(i.Restore.Step), i.Restore.Error
		}
		obs[n] = o
	}
	return obs
}

// restoreAct carries out one decided action on s; changed says whether s
// must be persisted.
func (m *Manager) restoreAct(ctx context.Context, term int64, s *restore.State, act restore.Action, infos map[string]peer.Info, log interface {
	Info(string, ...any)
	Warn(string, ...any)
	Error(string, ...any)
}) (changed bool, err error) {
	now := m.now().UTC()
	switch act.Kind {
	case restore.ActValidate:
		if err := m.validateRestore(ctx, term, s); err != nil {
			if ctx.Err() != nil {
				return false, err
			}
			s.Phase, s.Error = restore.PhaseFailed, err.Error()
			s.Record(now, "refused before anything was stopped: "+err.Error())
			return true, nil
		}
		s.Phase = restore.PhaseRestoring
		s.Record(m.now(), fmt.Sprintf("checked: backup %s (revision %d), %d segments, target revision %d; members %v under new token %s, revision bumped by %d",
			s.Backup, s.BackupRevision, len(s.Segments), s.TargetRevision, s.MemberNames(), s.NewClusterToken, s.BumpRevision))
		log.Info("restore checked; stopping the members", "backup", s.Backup, "members", s.MemberNames(), "newToken", s.NewClusterToken, "bumpRevision", s.BumpRevision)
		return true, nil
	case restore.ActSend:
		req := peer.RestoreRequest{LeaderID: m.ID(), LeaderTerm: term, CommandID: s.CommandID, Phase: act.Request, Backup: s.Backup,
			ClusterToken: s.NewClusterToken, EtcdVersion: s.EtcdVersion, InitialCluster: s.InitialCluster(), BumpRevision: s.BumpRevision}
		var errs []error
		for _, n := range act.Members {
			i, ok := infos[n]
			if !ok {
				continue
			}
			log.Info("telling a member", "member", n, "request", act.Request)
			if err := m.sendRestore(ctx, i, req); err != nil {
				errs = append(errs, err)
			}
		}
		return false, errors.Join(errs...)
	case restore.ActWait:
		m.restores.mu.Lock()
		same := m.restores.lastWait == act.Reason
		m.restores.lastWait = act.Reason
		m.restores.mu.Unlock()
		if !same {
			log.Info("restore waiting", "phase", s.Phase, "for", act.Reason)
		}
		return false, nil
	case restore.ActAdvance:
		s.Phase = act.To
		s.Record(now, act.Reason)
		log.Info("restore moves on", "phase", act.To, "why", act.Reason)
		return true, nil
	case restore.ActReplay:
		rev, err := m.replayRestore(ctx, *s)
		if err != nil {
			return false, fmt.Errorf("replaying the delta segments: %w", err)
		}
		s.Phase = restore.PhaseClearing
		s.Record(now, fmt.Sprintf("replayed %d segments up to revision %d", len(s.Segments), rev))
		return true, nil
	case restore.ActClear:
		n, err := m.clearStaleLeases(ctx)
		if err != nil {
			return false, err
		}
		s.Cleared = n
		s.Phase = restore.PhaseOpening
		s.Record(now, fmt.Sprintf("deleted %d stale API server lease keys (%v)", n, restore.StalePrefixes))
		log.Info("cleared stale API server leases; opening the cluster", "keys", n)
		return true, nil
	case restore.ActFinish:
		if err := m.adoptRestoredCluster(ctx, term, *s); err != nil {
			return false, err
		}
		s.Phase = restore.PhaseDone
		s.Record(now, "every member open and healthy; created marker now names token "+s.NewClusterToken)
		return true, nil
	case restore.ActRollback:
		s.Phase, s.Error = restore.PhaseRollingBack, act.Reason
		s.Record(now, "rolling back: "+act.Reason)
		log.Error("restore failed on a member; rolling every member back to its old data", "err", act.Reason)
		return true, nil
	case restore.ActFail:
		s.Phase = restore.PhaseFailed
		s.Record(now, "every member is back on its old data")
		return true, nil
	}
	return false, nil
}

func (m *Manager) sendRestore(ctx context.Context, i peer.Info, req peer.RestoreRequest) error {
	if i.ID == m.ID() {
		return m.Restore(ctx, req)
	}
	cctx, cancel := context.WithTimeout(ctx, 3*m.cfg.PeerTimeout)
	defer cancel()
	return m.client.Restore(cctx, i.ManagerAddr, req)
}

// validateRestore checks everything before anything is stopped, and fixes
// the plan in s: the spec and the installed binaries, the target against
// the backups in the store (every object read back and its hash checked),
// the members (all reachable), a full backup of the old cluster when it
// answers, and the revision bump.
func (m *Manager) validateRestore(ctx context.Context, term int64, s *restore.State) error {
	spec, err := control.ReadSpec(ctx, m.cfg.Store, m.layout)
	if err != nil {
		return err
	}
	if _, err := etcdprocess.BinaryPath(m.cfg.BinDirRoot, spec.EtcdVersion); err != nil {
		return err
	}
	if _, err := etcdprocess.UtilPath(m.cfg.BinDirRoot, spec.EtcdVersion); err != nil {
		return err
	}
	created, _, err := control.ReadCreated(ctx, m.cfg.Store, m.layout)
	if err != nil {
		return err
	}
	bst := m.backupStore()
	plan, err := restore.PlanFor(ctx, bst, m.layout, s.Target)
	if err != nil {
		return err
	}
	if err := restore.CheckVersion(plan.Base.Name, plan.Base.EtcdVersion, spec.EtcdVersion); err != nil {
		return err
	}
	infos := m.gatherAll(ctx)
	var cands []restore.Candidate
	for _, id := range sortedIDs(infos) {
		i := infos[id]
		cands = append(cands, restore.Candidate{ID: id, PeerURLs: i.PeerURLs, Token: i.ClusterToken, Idle: i.Idle()})
	}
	chosen, err := restore.ChooseMembers(spec.MemberCount, created.ClusterToken, cands)
	if err != nil {
		return err
	}
	// Every object is read back and checked before anything stops.
	if err := os.MkdirAll(m.spoolDir(), 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", m.spoolDir(), err)
	}
	if err := restore.CheckObjects(ctx, bst, m.layout, plan, m.spoolDir()); err != nil {
		return err
	}
	// The old cluster: its revision (for the bump) and a last backup.
	s.OldRevision = m.backupOldCluster(ctx, term, s, spec, created, infos)
	token, err := newToken()
	if err != nil {
		return err
	}
	s.Backup, s.BackupRevision, s.TargetRevision = plan.Base.Name, plan.Base.Revision, plan.TargetRevision
	s.Segments = restore.SegmentNames(plan)
	s.Plan = &plan
	s.EtcdVersion = spec.EtcdVersion
	s.OldClusterToken, s.NewClusterToken = created.ClusterToken, token
	s.BumpRevision = restore.Bump(s.OldRevision, plan.Base.Revision)
	s.Members = nil
	for _, c := range chosen {
		s.Members = append(s.Members, control.Member{Name: c.ID, PeerURLs: c.PeerURLs})
	}
	return nil
}

// backupOldCluster takes a full backup of the old cluster when it answers
// (recorded in s.BackupBefore, with the error when it failed: a restore
// is what an operator does when the cluster is broken, so it goes on) and
// returns the old cluster's revision (0 when it did not answer).
func (m *Manager) backupOldCluster(ctx context.Context, term int64, s *restore.State, spec control.Spec, created control.Created, infos map[string]peer.Info) int64 {
	src := &backupSource{spec: spec, token: created.ClusterToken}
	var endpoints []string
	for _, id := range sortedIDs(infos) {
		i := infos[id]
		if created.ClusterToken != "" && i.EtcdHealthy && !i.EtcdLearner && i.ClusterToken == created.ClusterToken && len(i.ClientURLs) > 0 {
			src.targets = append(src.targets, backupTarget{member: id, endpoint: i.ClientURLs[0]})
			endpoints = append(endpoints, i.ClientURLs...)
		}
	}
	if len(endpoints) == 0 {
		s.BackupBefore = "none: no member of the old cluster answers"
		return 0
	}
	var rev int64
	if c, err := m.newEtcdClient(endpoints); err == nil {
		gctx, cancel := context.WithTimeout(ctx, m.cfg.PeerTimeout)
		if resp, err := c.Get(gctx, "\x00", clientv3.WithCountOnly()); err == nil {
			rev = resp.Header.Revision
		}
		cancel()
		_ = c.Close()
	}
	m.setBackupSource(src)
	m.takeBackup(ctx, term, backupRequest{reason: "before restore " + s.CommandID})
	// Scheduled backups wait until the reconcile knows the restored
	// cluster (a snapshot of a stopped member would only fail).
	m.setBackupSource(nil)
	m.mu.Lock()
	b := m.backups
	m.mu.Unlock()
	switch {
	case b.lastError != "":
		s.BackupBefore = "failed: " + b.lastError
	case b.lastGood != nil:
		s.BackupBefore = b.lastGood.Name
	}
	return rev
}

// localQuarantineClient is a client of this instance's own quarantined
// etcd: the leader replays deltas and clears leases through it, so it
// must itself be a restored member.
func (m *Manager) localQuarantineClient(s restore.State) (*clientv3.Client, error) {
	member := false
	for _, n := range s.MemberNames() {
		member = member || n == m.ID()
	}
	if !member {
		return nil, fmt.Errorf("the leader %s is not a member of the restored cluster (%v); it reaches only its own quarantined etcd", m.ID(), s.MemberNames())
	}
	return m.newEtcdClient([]string{m.quarantineClientURL()})
}

func (m *Manager) replayRestore(ctx context.Context, s restore.State) (int64, error) {
	c, err := m.localQuarantineClient(s)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return restore.Replay(ctx, m.backupStore(), m.layout, s, c)
}

func (m *Manager) clearStaleLeases(ctx context.Context) (int64, error) {
	s, _, _, err := restore.Load(ctx, m.cfg.Store, m.layout, m.currentRestoreID())
	if err != nil {
		return 0, err
	}
	c, err := m.localQuarantineClient(s)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, 2*m.cfg.PeerTimeout)
	defer cancel()
	return restore.ClearAPIServerLeases(cctx, c)
}

func (m *Manager) currentRestoreID() string {
	m.restores.mu.Lock()
	defer m.restores.mu.Unlock()
	if m.restores.runner == nil {
		return ""
	}
	return m.restores.runner.id
}

// adoptRestoredCluster points the created marker at the restored cluster
// (compare-and-swap, so a marker changed meanwhile is not overwritten):
// from now on the reconcile manages it, and members still on the old
// token are told to leave.
func (m *Manager) adoptRestoredCluster(ctx context.Context, term int64, s restore.State) error {
	cur, v, ok, err := control.ReadCreatedVersion(ctx, m.cfg.Store, m.layout)
	if err != nil {
		return err
	}
	if ok && cur.ClusterToken == s.NewClusterToken {
		return nil // a killed leader got this far
	}
	if ok && cur.ClusterToken != s.OldClusterToken {
		return fmt.Errorf("the created marker %s names token %s, neither the old cluster's (%s) nor the restored one's (%s); not replacing it",
			store.JoinURL(m.cfg.Store.URL(), m.layout.CreatedKey()), cur.ClusterToken, s.OldClusterToken, s.NewClusterToken)
	}
	c := control.Created{ClusterToken: s.NewClusterToken, EtcdVersion: s.EtcdVersion, InitialMembers: s.Members, CreatedBy: m.ID(), LeaderTerm: term, Created: m.now().UTC()}
	if !ok {
		v = ""
	}
	if err := control.ReplaceCreated(ctx, m.cfg.Store, m.layout, c, v); err != nil {
		return err
	}
	return control.MarkBootstrapped(ctx, m.cfg.Store, m.layout, m.ID())
}

// finishMembers tells the restored members the restore is over, so they
// prune old moved-aside data (best effort: a member that misses it
// prunes after its next restore).
func (m *Manager) finishMembers(ctx context.Context, term int64, s restore.State, infos map[string]peer.Info) {
	req := peer.RestoreRequest{LeaderID: m.ID(), LeaderTerm: term, CommandID: s.CommandID, Phase: restore.RequestFinish}
	for _, n := range s.MemberNames() {
		if i, ok := infos[n]; ok {
			if err := m.sendRestore(ctx, i, req); err != nil {
				m.logger.Warn("telling a member the restore is over", "member", n, "err", err)
			}
		}
	}
}

// afterRestore takes a full backup of the restored cluster (the base of
// its delta chain and of the verification) and asks the verify goroutine
// to check it by a test restore. Both are reported, not fatal: the
// restore is done.
func (m *Manager) afterRestore(ctx context.Context, term int64, s restore.State, infos map[string]peer.Info) {
	spec, err := control.ReadSpec(ctx, m.cfg.Store, m.layout)
	if err != nil {
		m.logger.Warn("no backup after the restore", "err", err)
		return
	}
	src := &backupSource{spec: spec, token: s.NewClusterToken}
	for _, n := range s.MemberNames() {
		if i, ok := infos[n]; ok && i.EtcdHealthy && i.ClusterToken == s.NewClusterToken && len(i.ClientURLs) > 0 {
			tg := backupTarget{member: n, endpoint: i.ClientURLs[0]}
			if n == m.ID() {
				src.targets = append([]backupTarget{tg}, src.targets...)
			} else {
				src.targets = append(src.targets, tg)
			}
		}
	}
	m.setBackupSource(src)
	m.takeBackup(ctx, term, backupRequest{reason: "after restore " + s.CommandID})
	if err := m.requestVerify("after restore " + s.CommandID); err != nil {
		m.logger.Warn("cannot ask for a verification after the restore", "err", err)
	}
}

// ---- the member's side ----

// quarantineClientURL is where a restored, quarantined etcd serves
// clients: loopback (the node's own address when that is a loopback
// address, as in tests where every instance has its own), at the client
// port plus QuarantinePortOffset.
func (m *Manager) quarantineClientURL() string {
	host := "127.0.0.1"
	if ip := net.ParseIP(m.cfg.Address); ip != nil && ip.IsLoopback() {
		host = m.cfg.Address
	}
	return (&url.URL{Scheme: "https", Host: net.JoinHostPort(host, strconv.Itoa(m.cfg.ClientPort+QuarantinePortOffset))}).String()
}

// localClientURL is where the manager reaches its own etcd: the
// quarantine URL while the member is quarantined.
func (m *Manager) localClientURL() string {
	if l := m.restoreLocal(); l != nil && l.Quarantined() {
		return m.quarantineClientURL()
	}
	return m.listenURL(m.cfg.ClientPort)
}

// restoreLocal returns the member's restore record (nil when none),
// reading restore.json once.
func (m *Manager) restoreLocal() *restore.Local {
	m.restores.mu.Lock()
	defer m.restores.mu.Unlock()
	if !m.restores.loaded {
		l, ok, err := restore.LoadLocal(m.cfg.DataDir)
		if err != nil {
			m.logger.Error("reading the restore record", "err", err)
		} else if ok {
			m.restores.local = &l
		}
		m.restores.loaded = true
	}
	if m.restores.local == nil {
		return nil
	}
	l := *m.restores.local
	return &l
}

func (m *Manager) saveRestoreLocal(l restore.Local) error {
	l.Updated = m.now().UTC()
	if err := restore.SaveLocal(m.cfg.DataDir, l); err != nil {
		return err
	}
	m.restores.mu.Lock()
	m.restores.local, m.restores.loaded = &l, true
	m.restores.mu.Unlock()
	return nil
}

// restoreInfo is the Restore part of this instance's Info. A restore
// interrupted by a restart (its record says restoring, no worker runs)
// is reported with no step, so the leader asks again and it resumes.
func (m *Manager) restoreInfo() *peer.RestoreInfo {
	l := m.restoreLocal()
	if l == nil {
		return nil
	}
	m.restores.mu.Lock()
	working := m.restores.working
	m.restores.mu.Unlock()
	ri := &peer.RestoreInfo{CommandID: l.CommandID, Step: string(l.Step), Error: l.Error}
	if l.Step == restore.StepRestoring && working != l.CommandID {
		ri.Step = ""
	}
	return ri
}

// restoreEtcdConfig adjusts how etcd starts during a restore: not at all
// while the member's data directory is being restored or the restore
// failed (waiting for the leader to roll it back), and quarantined once
// restored until the leader opens it.
func (m *Manager) restoreEtcdConfig(cfg *etcdprocess.Config) error {
	l := m.restoreLocal()
	if l == nil {
		return nil
	}
	if l.Blocked() {
		return fmt.Errorf("etcd is not started: restore %s is at step %q in %s (the leader resumes or rolls it back)", l.CommandID, l.Step, filepath.Join(m.cfg.DataDir, restore.LocalFileName))
	}
	if l.Quarantined() {
		cfg.ListenClientURLs = []string{m.quarantineClientURL()}
		cfg.AdvertiseClientURLs = []string{m.quarantineClientURL()}
	}
	return nil
}

// Restore implements peer.Restorer: the leader's requests of a restore.
// The work runs in a goroutine of this instance (it outlasts a peer
// call); progress is reported in Info.Restore.
func (m *Manager) Restore(ctx context.Context, req peer.RestoreRequest) error {
	if err := m.checkTerm(req.LeaderID, req.LeaderTerm); err != nil {
		return err
	}
	if req.CommandID == "" {
		return errors.New("restore: commandID is required")
	}
	l := m.restoreLocal()
	mine := l != nil && l.CommandID == req.CommandID
	var work func(context.Context, peer.RestoreRequest) error
	switch req.Phase {
	case restore.RequestRestore:
		if req.ClusterToken == "" || req.InitialCluster == "" || req.BumpRevision <= 0 {
			return errors.New("restore: clusterToken, initialCluster and a positive bumpRevision are required")
		}
		if err := backup.ValidateName(req.Backup); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		if err := config.ValidateEtcdVersion(req.EtcdVersion); err != nil {
			return fmt.Errorf("restore: etcdVersion: %w", err)
		}
		if mine && (l.Step == restore.StepQuarantined || l.Step == restore.StepOpen) {
			return nil
		}
		work = m.restoreMember
	case restore.RequestOpen:
		if !mine {
			return fmt.Errorf("restore %s: this instance did not restore it", req.CommandID)
		}
		if l.Step == restore.StepOpen {
			return nil
		}
		if l.Step != restore.StepQuarantined {
			return fmt.Errorf("restore %s: cannot open at step %q", req.CommandID, l.Step)
		}
		work = m.openMember
	case restore.RequestRollback:
		if !mine || l.Step == restore.StepRolledBack {
			return nil
		}
		work = m.rollbackMember
	case restore.RequestFinish:
		if !mine {
			return nil
		}
		work = m.finishMember
	default:
		return fmt.Errorf("restore: phase %q is not restore, open, rollback or finish", req.Phase)
	}
	m.restores.mu.Lock()
	if w := m.restores.working; w != "" {
		m.restores.mu.Unlock()
		if w == req.CommandID {
			return nil // under way; the leader repeats itself
		}
		return fmt.Errorf("restore %s: busy with restore %s", req.CommandID, w)
	}
	m.restores.working = req.CommandID
	m.restores.mu.Unlock()
	m.mu.Lock()
	closing := m.closing
	m.mu.Unlock()
	if closing || m.loopCtx == nil {
		m.restores.mu.Lock()
		m.restores.working = ""
		m.restores.mu.Unlock()
		return errors.New("restore: etcd-manager is shutting down")
	}
	m.backupWG.Add(1)
	go func() {
		defer m.backupWG.Done()
		defer func() {
			m.restores.mu.Lock()
			m.restores.working = ""
			m.restores.mu.Unlock()
		}()
		log := m.logger.With("restore", req.CommandID, "phase", req.Phase, "leader", req.LeaderID)
		if err := work(m.loopCtx, req); err != nil {
			log.Error("restore work on this member failed", "err", err)
			return
		}
		log.Info("restore work on this member done")
	}()
	return nil
}

// stopEtcdLocked stops the local etcd; opMu must be held.
func (m *Manager) stopEtcdLocked(ctx context.Context) error {
	m.mu.Lock()
	p := m.proc
	m.proc = nil
	m.mu.Unlock()
	if p != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		if err := p.Stop(sctx); err != nil {
			return fmt.Errorf("stopping etcd: %w", err)
		}
	}
	m.closeLocalClient()
	return nil
}

// restoreMember: stop etcd, move its data aside (never deleted here),
// fetch and check the snapshot, restore it with etcdutl, start it
// quarantined. opMu is held only around the short changes, so the tick
// (and a leader's lease renewal) goes on while the snapshot downloads.
// A failure is recorded (step failed) and etcd stays stopped until the
// leader rolls the member back.
func (m *Manager) restoreMember(ctx context.Context, req peer.RestoreRequest) error {
	fail := func(err error) error {
		l := m.restoreLocal()
		if l != nil && l.CommandID == req.CommandID && ctx.Err() == nil {
			l.Step, l.Error = restore.StepFailed, err.Error()
			if serr := m.saveRestoreLocal(*l); serr != nil {
				m.logger.Error("recording a failed restore", "err", serr)
			}
		}
		return err
	}
	m.opMu.Lock()
	err := m.restorePrepareLocked(ctx, req)
	m.opMu.Unlock()
	if err != nil {
		return fail(err)
	}
	snap := restore.SnapshotFile(m.cfg.DataDir)
	spool := filepath.Dir(snap)
	if err := os.MkdirAll(spool, 0o700); err != nil {
		return fail(fmt.Errorf("creating %s: %w", spool, err))
	}
	defer os.RemoveAll(spool)
	meta, err := backup.Read(ctx, m.backupStore(), m.layout, req.Backup, snap)
	if err != nil {
		return fail(err)
	}
	db := snap + ".db"
	if err := backup.ExtractDB(snap, db); err != nil {
		return fail(fmt.Errorf("extracting the database of backup %s: %w", req.Backup, err))
	}
	_ = os.Remove(snap)
	m.mu.Lock()
	id := m.state.ID
	m.mu.Unlock()
	err = etcdprocess.RestoreSnapshot(ctx, etcdprocess.RestoreConfig{
		BinDirRoot: m.cfg.BinDirRoot, Version: req.EtcdVersion, Snapshot: db, SnapshotSHA256: meta.DBSHA256, DataDir: m.etcdDataDir(),
		Name: id, InitialCluster: req.InitialCluster, InitialClusterToken: req.ClusterToken,
		InitialAdvertisePeerURLs: []string{m.peerURL()}, BumpRevision: req.BumpRevision, MarkCompacted: true, Logger: m.logger,
	})
	if err != nil {
		return fail(err)
	}
	m.opMu.Lock()
	defer m.opMu.Unlock()
	m.mu.Lock()
	st := m.state
	m.mu.Unlock()
	st.ClusterToken, st.EtcdVersion, st.InitialCluster, st.InitialClusterState = req.ClusterToken, req.EtcdVersion, req.InitialCluster, "new"
	if err := identity.Save(m.cfg.DataDir, st); err != nil {
		return fail(err)
	}
	m.mu.Lock()
	m.state = st
	m.mu.Unlock()
	l := m.restoreLocal()
	l.Step, l.Error = restore.StepQuarantined, ""
	if err := m.saveRestoreLocal(*l); err != nil {
		return fail(err)
	}
	m.logger.Info("restored the snapshot; starting etcd quarantined", "backup", req.Backup, "token", req.ClusterToken, "clientURL", m.quarantineClientURL())
	return m.startEtcdLocked()
}

// restorePrepareLocked records the restore, stops etcd and moves its data
// aside (or removes what an interrupted attempt of this restore left:
// that is restored backup data, not the old data, which is aside).
func (m *Manager) restorePrepareLocked(ctx context.Context, req peer.RestoreRequest) error {
	m.mu.Lock()
	st := m.state
	m.mu.Unlock()
	l := restore.Local{CommandID: req.CommandID, Step: restore.StepRestoring, Backup: req.Backup, NewToken: req.ClusterToken, Old: st}
	if prev := m.restoreLocal(); prev != nil && prev.CommandID == req.CommandID {
		// An interrupted attempt: the old membership and data are the
		// ones it recorded.
		l.Old, l.AsideDir = prev.Old, prev.AsideDir
	}
	if err := m.saveRestoreLocal(l); err != nil {
		return err
	}
	if err := m.stopEtcdLocked(ctx); err != nil {
		return err
	}
	if dirExists(m.etcdDataDir()) {
		if l.AsideDir == "" {
			aside := restore.AsideDirName(m.cfg.DataDir, m.now())
			if err := os.Rename(m.etcdDataDir(), aside); err != nil {
				return fmt.Errorf("moving %s aside: %w", m.etcdDataDir(), err)
			}
			l.AsideDir = aside
			m.logger.Info("restore: old etcd data moved aside", "to", aside)
			return m.saveRestoreLocal(l)
		}
		if err := os.RemoveAll(m.etcdDataDir()); err != nil {
			return fmt.Errorf("removing the partly restored %s: %w", m.etcdDataDir(), err)
		}
	}
	return nil
}

// openMember restarts the quarantined etcd serving clients as usual.
func (m *Manager) openMember(ctx context.Context, req peer.RestoreRequest) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	l := m.restoreLocal()
	if l == nil || l.CommandID != req.CommandID || l.Step != restore.StepQuarantined {
		return nil
	}
	if err := m.stopEtcdLocked(ctx); err != nil {
		return err
	}
	l.Step = restore.StepOpen
	if err := m.saveRestoreLocal(*l); err != nil {
		return err
	}
	m.logger.Info("restore: opening etcd to clients", "clientURLs", m.listenClientURLs())
	return m.startEtcdLocked()
}

// rollbackMember puts the old data and membership back and restarts the
// old member. The restored data (a copy of the backup) is removed.
func (m *Manager) rollbackMember(ctx context.Context, req peer.RestoreRequest) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	l := m.restoreLocal()
	if l == nil || l.CommandID != req.CommandID || l.Step == restore.StepRolledBack {
		return nil
	}
	if err := m.stopEtcdLocked(ctx); err != nil {
		return err
	}
	if l.AsideDir != "" && dirExists(l.AsideDir) {
		if err := os.RemoveAll(m.etcdDataDir()); err != nil {
			return fmt.Errorf("rollback: removing the restored %s: %w", m.etcdDataDir(), err)
		}
		if err := os.Rename(l.AsideDir, m.etcdDataDir()); err != nil {
			return fmt.Errorf("rollback: moving %s back: %w", l.AsideDir, err)
		}
	} else if l.AsideDir == "" {
		// It had no data: it goes back to idle.
		if err := os.RemoveAll(m.etcdDataDir()); err != nil {
			return fmt.Errorf("rollback: removing the restored %s: %w", m.etcdDataDir(), err)
		}
	}
	old := l.Old
	m.mu.Lock()
	old.ID = m.state.ID
	m.mu.Unlock()
	if err := identity.Save(m.cfg.DataDir, old); err != nil {
		return err
	}
	m.mu.Lock()
	m.state = old
	m.mu.Unlock()
	l.Step = restore.StepRolledBack
	if err := m.saveRestoreLocal(*l); err != nil {
		return err
	}
	m.logger.Info("restore rolled back: old etcd data and membership are back", "token", old.ClusterToken)
	if old.ClusterToken == "" {
		return nil
	}
	return m.startEtcdLocked()
}

// finishMember prunes moved-aside data directories once a restore is over
// and the cluster healthy: the newest restore.KeepAside are kept.
func (m *Manager) finishMember(ctx context.Context, req peer.RestoreRequest) error {
	removed, err := restore.PruneAside(m.cfg.DataDir, restore.KeepAside)
	if len(removed) > 0 {
		m.logger.Info("restore over: removed old moved-aside etcd data", "removed", removed, "kept", restore.KeepAside)
	}
	return err
}

// restoreMetrics are the restore's metrics (label etcd_cluster).
type restoreMetrics struct {
	total      *prometheus.CounterVec
	duration   prometheus.Gauge
	inProgress prometheus.GaugeFunc
}

func newRestoreMetrics(m *Manager, labels prometheus.Labels) *restoreMetrics {
	r := &restoreMetrics{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "etcd_manager_restores_total",
			Help: "Restores this instance finished as leader, by result: done, failed.", ConstLabels: labels}, []string{"result"}),
		duration: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcd_manager_restore_duration_seconds",
			Help: "From the pick-up of the last restore this instance finished as leader to its end.", ConstLabels: labels}),
	}
	r.total.WithLabelValues("done")
	r.total.WithLabelValues("failed")
	r.inProgress = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "etcd_manager_restore_in_progress",
		Help: "1 while this instance, as leader, runs a restore (the reconcile makes no membership change meanwhile).", ConstLabels: labels}, func() float64 {
		m.restores.mu.Lock()
		defer m.restores.mu.Unlock()
		if r := m.restores.runner; r != nil {
			select {
			case <-r.done:
			default:
				return 1
			}
		}
		return 0
	})
	return r
}

func (r *restoreMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{r.total, r.duration, r.inProgress}
}

func (r *restoreMetrics) finished(result string, took time.Duration) {
	r.total.WithLabelValues(result).Inc()
	if took > 0 {
		r.duration.Set(took.Seconds())
	}
}
