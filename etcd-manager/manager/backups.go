package manager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/store"
)

// BackupConfig configures the leader's full backups (package backup).
type BackupConfig struct {
	// Interval between scheduled full backups; 0 turns the schedule off
	// (backups before membership changes and backup-now commands are
	// still taken). The node configuration's backups.interval.
	Interval time.Duration
	// Store receives the backups; nil means the state store (Config.Store).
	// The node configuration's backups.store.
	Store store.Store
	// FreshBeforeChange: a membership change goes ahead only after a
	// backup attempt that started at most this long ago has finished.
	FreshBeforeChange time.Duration
	// Retention is how long backups are kept (backup.Retain); the
	// node configuration's backups.retention.
	Retention backup.Policy
	// RetentionInterval is how often the leader applies retention besides
	// after each good full backup (default an hour).
	RetentionInterval time.Duration
	// VerifyInterval is how often the leader verifies the newest backup
	// by a test restore (verify.go); 0 leaves only the verifications after
	// restores. The flag --verify-interval.
	VerifyInterval time.Duration
	// DeltaInterval is the most a change waits before the leader writes
	// it in a delta segment (deltas.go); 0 turns deltas off. The flag
	// --delta-interval.
	DeltaInterval time.Duration
}

// DefaultBackupConfig is a backup every 15 minutes into the state store.
func DefaultBackupConfig() BackupConfig {
	return BackupConfig{Interval: 15 * time.Minute, FreshBeforeChange: time.Minute, Retention: backup.DefaultPolicy(), RetentionInterval: time.Hour, VerifyInterval: DefaultVerifyInterval, DeltaInterval: 5 * time.Second}
}

// Validate returns every problem, naming the field.
func (b BackupConfig) Validate() error {
	var errs []error
	if b.Interval < 0 {
		errs = append(errs, fmt.Errorf("backups.interval: %s is negative", b.Interval))
	}
	if b.FreshBeforeChange <= 0 {
		errs = append(errs, fmt.Errorf("backups.freshBeforeChange: %s must be positive", b.FreshBeforeChange))
	}
	if err := b.Retention.Validate("backups.retention"); err != nil {
		errs = append(errs, err)
	}
	if b.VerifyInterval < 0 {
		errs = append(errs, fmt.Errorf("backups.verifyInterval: %s is negative", b.VerifyInterval))
	}
	if b.RetentionInterval <= 0 {
		errs = append(errs, fmt.Errorf("backups.retentionInterval: %s must be positive", b.RetentionInterval))
	}
	if b.DeltaInterval < 0 {
		errs = append(errs, fmt.Errorf("backups.deltaInterval: %s is negative", b.DeltaInterval))
	}
	return errors.Join(errs...)
}

// nextBackupAt is when the next scheduled backup is due: one interval after
// the later of the last good backup's start (possibly taken by an earlier
// leader) and this term's last attempt (a failed backup is retried an
// interval later, not in a loop); now when there is neither. ok is false
// when the schedule is off.
func nextBackupAt(lastGood, lastAttempt time.Time, interval time.Duration, now time.Time) (at time.Time, ok bool) {
	if interval <= 0 {
		return time.Time{}, false
	}
	last := lastGood
	if lastAttempt.After(last) {
		last = lastAttempt
	}
	if last.IsZero() {
		return now, true
	}
	return last.Add(interval), true
}

// freshEnough decides whether a risky change may go ahead: a backup
// attempt has finished that started within fresh of now, or that started
// after the change asked for it (askedAt; a backup may take longer than
// fresh). Its outcome does not matter (a store that refuses backups must
// not stop the replacement of a dead member); a failure is logged and
// counted.
func freshEnough(attemptStart, attemptEnd, askedAt, now time.Time, fresh time.Duration) bool {
	if attemptStart.IsZero() || attemptEnd.Before(attemptStart) {
		return false
	}
	return now.Sub(attemptStart) <= fresh || (!askedAt.IsZero() && !attemptStart.Before(askedAt))
}

// backupRequest asks the term's backup goroutine for a backup.
type backupRequest struct {
	reason string
	// commandID is the backup-now command to record the result of.
	commandID string
}

// backupChans are the channels of one leader term's backup goroutine.
type backupChans struct {
	reqs chan backupRequest
	// retain asks the term's retention goroutine for a pass (retention.go).
	retain chan struct{}
}

// backupRunner is the backup goroutine of one leader term.
type backupRunner = termRun[backupChans]

// backupSource is what the last reconcile knew about the cluster: the
// healthy voters to snapshot from (this instance's first), the spec and
// the cluster token. The backup goroutine reads it; the tick writes it.
type backupSource struct {
	targets []backupTarget
	spec    control.Spec
	token   string
}

type backupTarget struct{ member, endpoint string }

// backupState is the leader's memory of its backups, guarded by m.mu.
type backupState struct {
	lastGood      *backup.Meta
	attemptStart  time.Time
	attemptEnd    time.Time
	lastError     string
	lastReason    string
	requested     bool
	askedAt       time.Time
	nextScheduled time.Time
}

// BackupStatus is the backup part of the status document.
type BackupStatus struct {
	// Interval is the schedule ("0s": off).
	Interval string `json:"interval"`
	// Store is where backups go.
	Store string `json:"store"`
	// LastGood is the newest complete backup this instance knows of
	// (read from the store when it became leader, then its own).
	LastGood *BackupSummary `json:"lastGood,omitempty"`
	// LastAttempt is when this instance last started a backup, and
	// LastError its error ("" when it worked) with FailureReason.
	LastAttempt   time.Time `json:"lastAttempt,omitzero"`
	LastError     string    `json:"lastError,omitempty"`
	FailureReason string    `json:"failureReason,omitempty"`
	// NextScheduled is when the leader takes the next scheduled backup.
	NextScheduled time.Time `json:"nextScheduled,omitzero"`
	// Retention is the retention policy and this instance's last pass.
	Retention *RetentionStatus `json:"retention,omitempty"`
	// Verification is the leader's test restores of the newest backup.
	Verification *VerifyStatus `json:"verification,omitempty"`
}

// BackupSummary names one backup.
type BackupSummary struct {
	Name       string    `json:"name"`
	Started    time.Time `json:"started"`
	Revision   int64     `json:"revision"`
	StoredSize int64     `json:"storedSize"`
}

func (m *Manager) backupStore() store.Store {
	if m.cfg.Backups.Store != nil {
		return m.cfg.Backups.Store
	}
	return m.cfg.Store
}

func (m *Manager) spoolDir() string { return filepath.Join(m.cfg.DataDir, "backup-spool") }

// syncBackupRunner starts the backup goroutine of a new leader term and
// stops the one of a term that ended. Only the loop goroutine (and Close,
// after the loop ended) calls it.
func (m *Manager) syncBackupRunner(isLeader bool, term int64) {
	parent := m.termParent()
	m.verify.task.sync(parent, isLeader, term, true, m.logger, "verify",
		func() chan string { return make(chan string, 4) }, m.resetVerifyTerm, m.runVerify)
	m.deltas.task.sync(parent, isLeader, term, m.cfg.Backups.DeltaInterval > 0, m.logger, "delta",
		func() struct{} { return struct{}{} }, nil, m.runDeltas)
	m.backupTask.sync(parent, isLeader, term, true, m.logger, "backup",
		func() backupChans {
			return backupChans{reqs: make(chan backupRequest, 16), retain: make(chan struct{}, 1)}
		}, m.resetBackupTerm, m.runBackups)
}

// resetBackupTerm forgets what an earlier term knew, as a new term's
// backup goroutine starts.
func (m *Manager) resetBackupTerm() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.backups.attemptStart, m.backups.attemptEnd, m.backups.requested, m.backups.askedAt = time.Time{}, time.Time{}, false, time.Time{}
	// What an earlier term knew about the cluster may be stale.
	m.backupSrc = nil
}

// termParent is the context the leader term goroutines start under: nil
// before the loop runs and once Close or Kill began (nothing new starts).
func (m *Manager) termParent() context.Context {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing {
		return nil
	}
	return m.loopCtx
}

// stopBackups cancels the leader term goroutines and waits for every one
// started: Close and Kill call it after the loop ended.
func (m *Manager) stopBackups() {
	m.verify.task.stop()
	m.deltas.task.stop()
	m.backupTask.stop()
	m.backupWG.Wait()
}

// requestBackup hands a request to the current term's backup goroutine.
func (m *Manager) requestBackup(req backupRequest) error {
	r := m.backupTask.current()
	if r == nil {
		return errors.New("not the leader: no backup goroutine runs")
	}
	select {
	case r.ch.reqs <- req:
		return nil
	default:
		return errors.New("too many backups queued")
	}
}

// backupBeforeChange is called by the leader before a risky change (a
// membership change): it reports whether the change may go ahead now.
// Without a fresh enough backup attempt it asks for one and returns false;
// the change is made on a later tick, after the attempt finished.
func (m *Manager) backupBeforeChange(why string) bool {
	now := m.now()
	m.mu.Lock()
	b := m.backups
	m.mu.Unlock()
	if !b.requested && freshEnough(b.attemptStart, b.attemptEnd, b.askedAt, now, m.cfg.Backups.FreshBeforeChange) {
		m.mu.Lock()
		m.backups.askedAt = time.Time{}
		m.mu.Unlock()
		if b.lastError != "" {
			m.logger.Warn("going ahead without a fresh backup: the last attempt failed", "change", why, "err", b.lastError)
		}
		return true
	}
	if b.requested {
		m.logger.Info("waiting for a backup before a membership change", "change", why)
		return false
	}
	if err := m.requestBackup(backupRequest{reason: why}); err != nil {
		m.logger.Warn("cannot ask for a backup before a membership change; going ahead", "change", why, "err", err)
		return true
	}
	m.mu.Lock()
	m.backups.requested, m.backups.askedAt = true, now
	m.mu.Unlock()
	m.logger.Info("taking a backup before a membership change", "change", why)
	return false
}

// setBackupSource records what the backup goroutine snapshots from.
func (m *Manager) setBackupSource(src *backupSource) {
	m.mu.Lock()
	m.backupSrc = src
	m.mu.Unlock()
}

// runBackups is one leader term's backup goroutine: scheduled backups,
// requested ones (before membership changes, backup-now commands), one
// at a time, until the term ends. A panic ends the goroutine with a log;
// the next term starts a new one.
func (m *Manager) runBackups(ctx context.Context, r *backupRunner, prev <-chan struct{}) {
	// The previous term's goroutine was cancelled; it ends first, so two
	// backups never share the spool folder.
	if !waitPrev(ctx, prev) {
		m.failQueued(r)
		return
	}
	// A spool file left by a killed run is removed.
	if err := os.RemoveAll(m.spoolDir()); err != nil {
		m.logger.Warn("cleaning the backup spool directory", "dir", m.spoolDir(), "err", err)
	}
	m.loadLastGood(ctx)
	m.backupWG.Add(1)
	go m.runRetention(ctx, r)
	// notBefore delays a scheduled backup while the cluster is not known
	// yet (not created, or this term's first reconcile has not run).
	var notBefore time.Time
	for {
		m.mu.Lock()
		var lastGood time.Time
		if m.backups.lastGood != nil {
			lastGood = m.backups.lastGood.Started
		}
		at, on := nextBackupAt(lastGood, m.backups.attemptStart, m.cfg.Backups.Interval, m.now())
		if at.Before(notBefore) {
			at = notBefore
		}
		m.backups.nextScheduled = at
		m.mu.Unlock()
		var due <-chan time.Time
		var timer *time.Timer
		if on {
			timer = time.NewTimer(max(0, at.Sub(m.now())))
			due = timer.C
		}
		select {
		case <-ctx.Done():
			m.failQueued(r)
			return
		case req := <-r.ch.reqs:
			m.takeBackup(ctx, r.term, req)
		case <-due:
			m.mu.Lock()
			known := m.backupSrc != nil
			m.mu.Unlock()
			if !known {
				notBefore = m.now().Add(m.cfg.Tick)
				break
			}
			m.takeBackup(ctx, r.term, backupRequest{reason: "scheduled"})
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// backupAreaTimeout bounds one listing of the backup area, which reads
// the meta of every full backup or delta segment: hundreds to thousands of
// objects after months of retention. It runs in a leader term's
// goroutines, never in the tick, so it does not hold up the lease.
const backupAreaTimeout = time.Minute

// loadLastGood reads the newest complete backup from the store, so a new
// leader neither backs up at once after a failover nor reports no backup.
func (m *Manager) loadLastGood(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, backupAreaTimeout)
	defer cancel()
	ls, err := backup.List(lctx, m.backupStore(), m.layout)
	if err != nil {
		m.logger.Warn("listing backups", "err", err)
		return
	}
	if len(ls.Backups) == 0 {
		return
	}
	newest := ls.Backups[0]
	m.mu.Lock()
	if m.backups.lastGood == nil || newest.Started.After(m.backups.lastGood.Started) {
		m.backups.lastGood = &newest
	}
	m.mu.Unlock()
}

// failQueued records a result for backup-now commands the ended term
// claimed but did not run, so they do not look forever in progress.
func (m *Manager) failQueued(r *backupRunner) {
	for {
		select {
		case req := <-r.ch.reqs:
			if req.commandID != "" {
				m.writeCommandResult(req.commandID, "", errors.New("the leader term ended before the backup ran; queue the command again"))
			}
		default:
			return
		}
	}
}

func (m *Manager) writeCommandResult(id, detail string, err error) {
	res := control.Result{LeaderID: m.ID(), Finished: m.now().UTC(), Detail: detail}
	if err != nil {
		res.Error = err.Error()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*m.cfg.PeerTimeout)
	defer cancel()
	if werr := control.WriteResult(ctx, m.cfg.Store, m.layout, id, res); werr != nil {
		m.logger.Warn("writing a command's result", "id", id, "err", werr)
	}
}

// takeBackup takes one full backup from the first healthy member that
// gives one, and records the outcome: state, metrics, log, and the
// command's result.
func (m *Manager) takeBackup(ctx context.Context, term int64, req backupRequest) {
	start := m.now()
	m.mu.Lock()
	src := m.backupSrc
	m.backups.attemptStart = start
	m.mu.Unlock()
	meta, err := m.takeFrom(ctx, term, req, src)
	end := m.now()
	m.mu.Lock()
	m.backups.attemptEnd = end
	m.backups.requested = false
	if err == nil {
		m.backups.lastGood = &meta
		m.backups.lastError, m.backups.lastReason = "", ""
	} else {
		m.backups.lastError, m.backups.lastReason = err.Error(), backup.ReasonOf(err)
	}
	m.mu.Unlock()
	if err == nil {
		if r := m.backupTask.current(); r != nil && r.term == term {
			nudgeRetention(r)
		}
		m.met.backupDone(meta, end.Sub(start))
		m.logger.Info("took a full backup", "backup", meta.Name, "reason", req.reason, "revision", meta.Revision, "keys", meta.KeyCount,
			"dbBytes", meta.DBSize, "storedBytes", meta.StoredSize, "took", end.Sub(start).Round(time.Millisecond), "store", m.backupStore().URL())
	} else {
		m.met.backupFailed(backup.ReasonOf(err))
		m.logger.Error("full backup failed; etcd keeps running, the next one is tried at the next interval", "reason", req.reason, "failure", backup.ReasonOf(err), "err", err)
	}
	if req.commandID != "" {
		m.writeCommandResult(req.commandID, meta.Name, err)
	}
}

func (m *Manager) takeFrom(ctx context.Context, term int64, req backupRequest, src *backupSource) (backup.Meta, error) {
	if ok, t := m.lease.IsLeader(); !ok || t != term {
		return backup.Meta{}, &backup.Error{Reason: backup.ReasonCanceled, Err: fmt.Errorf("no longer the leader of term %d", term)}
	}
	if src == nil || len(src.targets) == 0 {
		return backup.Meta{}, &backup.Error{Reason: backup.ReasonEtcd, Err: errors.New("no healthy etcd member to take a backup from")}
	}
	if err := os.MkdirAll(m.spoolDir(), 0o700); err != nil {
		return backup.Meta{}, &backup.Error{Reason: backup.ReasonLocal, Err: fmt.Errorf("creating the backup spool directory: %w", err)}
	}
	var errs []error
	for _, tg := range src.targets {
		c, err := m.newEtcdClient([]string{tg.endpoint})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		meta, err := backup.Take(ctx, c, m.backupStore(), m.layout, backup.Options{
			Reason: req.reason, Spec: src.spec, ClusterToken: src.token, Member: tg.member,
			Writer: backup.Writer{LeaderID: m.ID(), LeaderTerm: term}, SpoolDir: m.spoolDir(),
			Now: m.now, Logger: m.logger,
		})
		_ = c.Close()
		if err == nil {
			return meta, nil
		}
		// Another member may give a snapshot when this one does not; a
		// store or local failure would fail the same way again.
		if backup.ReasonOf(err) != backup.ReasonEtcd {
			return backup.Meta{}, err
		}
		errs = append(errs, err)
	}
	return backup.Meta{}, &backup.Error{Reason: backup.ReasonEtcd, Err: errors.Join(errs...)}
}

// backupStatusLocked is the status document's backup part.
func (m *Manager) backupStatusLocked() *BackupStatus {
	b := m.backups
	s := &BackupStatus{
		Interval: m.cfg.Backups.Interval.String(), Store: m.backupStore().URL(),
		LastAttempt: b.attemptStart, LastError: b.lastError, FailureReason: b.lastReason,
	}
	if m.backupTask.current() != nil {
		s.NextScheduled = b.nextScheduled
	}
	s.Retention = m.retentionStatusLocked()
	s.Verification = m.verifyStatus()
	if g := b.lastGood; g != nil {
		s.LastGood = &BackupSummary{Name: g.Name, Started: g.Started, Revision: g.Revision, StoredSize: g.StoredSize}
	}
	return s
}

// builtinCommand reports whether the manager itself handles a kind.
func (m *Manager) builtinCommand(kind string) bool {
	return kind == control.KindBackupNow || kind == control.KindRecoverQuorum
}

// startBuiltinCommand starts a claimed command the manager handles itself;
// its goroutine writes the result when done.
func (m *Manager) startBuiltinCommand(c control.Command) {
	switch c.Kind {
	case control.KindRecoverQuorum:
		m.refuseRecoverQuorum(c)
	case control.KindBackupNow:
		if err := m.requestBackup(backupRequest{reason: "command " + c.ID, commandID: c.ID}); err != nil {
			m.writeCommandResult(c.ID, "", err)
		}
	}
}
