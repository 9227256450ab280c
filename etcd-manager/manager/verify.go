package manager

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/backup/verify"
)

// Verification by test restore runs in its own goroutine of the leader's
// term, like backups and deltas: on a schedule (Backups.VerifyInterval,
// default daily, counted from the last verification any leader recorded
// in the store) and when asked (requestVerify: after every restore), it
// restores the newest full backup and its delta segments into a throwaway
// etcd (package backup/verify), records the result in the store beside the
// backups, and reports a failure loudly: log at Error, metrics, status.

// DefaultVerifyInterval is how often the leader verifies the newest backup.
const DefaultVerifyInterval = 24 * time.Hour

// verifyTimeout bounds one verification (read, restore, replay, compare).
const verifyTimeout = 30 * time.Minute

// verifyKeeper is the leader's verify goroutine and what it last did. It
// has its own lock (taken after m.mu, never before it).
type verifyKeeper struct {
	task termTask[chan string]

	mu sync.Mutex // guards the fields below
	// running is the trigger of the verification in progress ("" none).
	running      string
	runningSince time.Time
	// last is the last verification this instance knows of (its own, or
	// the newest recorded in the store when its term started); lastGood
	// the last that passed.
	last, lastGood *backup.Verification
	lastAttempt    time.Time
	nextScheduled  time.Time
	// nothing is set when the last attempt found no backup to verify.
	nothing bool
}

// verifyRunner is one leader term's verify goroutine; its channel takes
// requests to verify now (the reason).
type verifyRunner = termRun[chan string]

// VerifyStatus is the verification part of the status document.
type VerifyStatus struct {
	// Interval is the schedule ("0s": only after restores).
	Interval string `json:"interval"`
	// Running is the trigger of the verification in progress.
	Running      string    `json:"running,omitempty"`
	RunningSince time.Time `json:"runningSince,omitzero"`
	// NextScheduled is when the leader verifies next.
	NextScheduled time.Time `json:"nextScheduled,omitzero"`
	// Last is the last verification's result (OK, what differed);
	// LastVerified the last one that passed.
	Last         *backup.Verification `json:"last,omitempty"`
	LastVerified *VerifiedSummary     `json:"lastVerified,omitempty"`
	// NothingToVerify: the last attempt found no complete backup.
	NothingToVerify bool `json:"nothingToVerify,omitempty"`
}

// VerifiedSummary names the last backup a test restore proved good.
type VerifiedSummary struct {
	Backup   string    `json:"backup"`
	Finished time.Time `json:"finished"`
}

// nextVerifyAt is when the next scheduled verification is due: one
// interval after the later of the last recorded verification (possibly an
// earlier leader's) and this term's last attempt; now when there is
// neither. ok is false when the schedule is off.
func nextVerifyAt(lastRecorded, lastAttempt time.Time, interval time.Duration, now time.Time) (time.Time, bool) {
	return nextBackupAt(lastRecorded, lastAttempt, interval, now)
}

// resetVerifyTerm forgets this instance's last attempt, as a new term's
// verify goroutine starts.
func (m *Manager) resetVerifyTerm() {
	m.verify.mu.Lock()
	m.verify.lastAttempt = time.Time{}
	m.verify.mu.Unlock()
}

// requestVerify asks the current term's verify goroutine to verify the
// newest backup now (after a restore: reason says which). It fails when
// this instance is not the leader.
func (m *Manager) requestVerify(reason string) error {
	r := m.verify.task.current()
	if r == nil {
		return errors.New("not the leader: no verify goroutine runs")
	}
	select {
	case r.ch <- reason:
		return nil
	default:
		return errors.New("too many verifications queued")
	}
}

func (m *Manager) verifyDir() string { return filepath.Join(m.cfg.DataDir, "verify-work") }

// runVerify is one leader term's verify goroutine.
func (m *Manager) runVerify(ctx context.Context, r *verifyRunner, prev <-chan struct{}) {
	k := &m.verify
	if !waitPrev(ctx, prev) {
		return
	}
	// A throwaway etcd's directory left by a killed run is removed.
	if err := os.RemoveAll(m.verifyDir()); err != nil {
		m.logger.Warn("cleaning the verification directory", "dir", m.verifyDir(), "err", err)
	}
	m.loadLastVerification(ctx)
	var notBefore time.Time
	for {
		k.mu.Lock()
		var recorded time.Time
		if k.last != nil {
			recorded = k.last.Finished
		}
		at, on := nextVerifyAt(recorded, k.lastAttempt, m.cfg.Backups.VerifyInterval, m.now())
		if at.Before(notBefore) {
			at = notBefore
		}
		k.nextScheduled = time.Time{}
		if on {
			k.nextScheduled = at
		}
		k.mu.Unlock()
		var due <-chan time.Time
		var timer *time.Timer
		if on {
			timer = time.NewTimer(max(0, at.Sub(m.now())))
			due = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case reason := <-r.ch:
			m.verifyOnce(ctx, r.term, reason)
		case <-due:
			m.mu.Lock()
			known := m.backupSrc != nil
			m.mu.Unlock()
			if !known {
				notBefore = m.now().Add(m.cfg.Tick)
				break
			}
			if m.verifyOnce(ctx, r.term, "scheduled") == errNothing {
				// A new cluster: try again after its first backup.
				wait := m.cfg.Backups.Interval
				if wait <= 0 || wait > m.cfg.Backups.VerifyInterval {
					wait = m.cfg.Backups.VerifyInterval
				}
				notBefore = m.now().Add(wait)
			}
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// loadLastVerification reads the newest verification record from the
// store, so a new leader neither verifies at once after a failover nor
// reports none.
func (m *Manager) loadLastVerification(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, backupAreaTimeout)
	defer cancel()
	vs, err := backup.Verifications(lctx, m.backupStore(), m.layout)
	if err != nil {
		m.logger.Warn("reading verification records", "err", err)
		return
	}
	var last, good *backup.Verification
	for i := range vs {
		v := &vs[i]
		if last == nil || v.Finished.After(last.Finished) {
			last = v
		}
		if v.OK && (good == nil || v.Finished.After(good.Finished)) {
			good = v
		}
	}
	k := &m.verify
	k.mu.Lock()
	defer k.mu.Unlock()
	if last != nil && (k.last == nil || last.Finished.After(k.last.Finished)) {
		k.last = last
	}
	if good != nil && (k.lastGood == nil || good.Finished.After(k.lastGood.Finished)) {
		k.lastGood = good
	}
}

var errNothing = errors.New("nothing to verify")

// verifyOnce verifies the newest backup for leader term term and records
// the outcome: store record, state, metrics, log.
func (m *Manager) verifyOnce(ctx context.Context, term int64, trigger string) error {
	if ok, t := m.lease.IsLeader(); !ok || t != term {
		return nil
	}
	k := &m.verify
	start := m.now()
	k.mu.Lock()
	k.running, k.runningSince, k.lastAttempt = trigger, start, start
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		k.running, k.runningSince = "", time.Time{}
		k.mu.Unlock()
	}()
	m.mu.Lock()
	src := m.backupSrc
	m.mu.Unlock()
	o := verify.Options{BinDirRoot: m.cfg.BinDirRoot, WorkDir: m.verifyDir(),
		// The segments that chain from the backup are replayed (none when
		// deltas are off).
		Deltas:  true,
		Trigger: trigger, Verifier: m.ID(), Now: m.now, Logger: m.logger}
	if src != nil {
		o.EtcdVersions = []string{src.spec.EtcdVersion}
		if len(src.targets) > 0 {
			live, err := m.newEtcdClient([]string{src.targets[0].endpoint})
			if err == nil {
				defer live.Close()
				o.Live = live
			}
		}
	}
	if err := os.MkdirAll(m.verifyDir(), 0o700); err != nil {
		m.logger.Warn("creating the verification directory", "dir", m.verifyDir(), "err", err)
	}
	vctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	res, err := verify.Newest(vctx, m.backupStore(), m.layout, o)
	cancel()
	if errors.Is(err, verify.ErrNothingToVerify) {
		k.mu.Lock()
		k.nothing = true
		k.mu.Unlock()
		m.logger.Info("no backup to verify yet", "trigger", trigger)
		return errNothing
	}
	if res.Reason == backup.VerifyReasonCanceled && ctx.Err() != nil {
		// The term ended: nothing was proved either way.
		return err
	}
	took := m.now().Sub(start)
	if res.Backup != "" {
		wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*m.cfg.PeerTimeout)
		if werr := backup.WriteVerification(wctx, m.backupStore(), m.layout, res); werr != nil {
			m.logger.Warn("writing the verification record", "backup", res.Backup, "err", werr)
		}
		wcancel()
	}
	k.mu.Lock()
	k.nothing = false
	k.last = &res
	if res.OK {
		k.lastGood = &res
	}
	k.mu.Unlock()
	m.met.verify.done(res, took)
	if err != nil {
		m.logger.Error("BACKUP VERIFICATION FAILED: the newest backup did not restore as recorded", "backup", res.Backup, "trigger", trigger,
			"failure", res.Reason, "differences", strings.Join(res.Differences, "; "), "err", err)
		return err
	}
	m.logger.Info("verified the newest backup by a test restore", "backup", res.Backup, "trigger", trigger, "revision", res.Revision,
		"keys", res.KeyCount, "segments", res.Segments, "replayedRevision", res.ReplayedRevision, "comparedWithLive", res.ComparedWithLive,
		"took", took.Round(time.Millisecond))
	return nil
}

// verifyStatus is the status document's verification part.
func (m *Manager) verifyStatus() *VerifyStatus {
	k := &m.verify
	k.mu.Lock()
	defer k.mu.Unlock()
	s := &VerifyStatus{Interval: m.cfg.Backups.VerifyInterval.String(), Running: k.running, RunningSince: k.runningSince,
		Last: k.last, NothingToVerify: k.nothing}
	if k.task.current() != nil {
		s.NextScheduled = k.nextScheduled
	}
	if g := k.lastGood; g != nil {
		s.LastVerified = &VerifiedSummary{Backup: g.Backup, Finished: g.Finished}
	}
	return s
}

// verifyMetrics are verification's metrics.
type verifyMetrics struct {
	runs     prometheus.Counter
	failures *prometheus.CounterVec
	duration prometheus.Gauge
	lastOK   prometheus.Gauge
	lastTime prometheus.GaugeFunc
}

func newVerifyMetrics(m *Manager, labels prometheus.Labels) *verifyMetrics {
	vm := &verifyMetrics{
		runs: prometheus.NewCounter(prometheus.CounterOpts{Name: "etcd_manager_backup_verifications_total", Help: "Test restores of the newest backup run by this instance.", ConstLabels: labels}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "etcd_manager_backup_verify_failures_total",
			Help: "Test restores that did not prove the backup good, by reason: store, integrity, chain, tools, restore, mismatch, canceled.", ConstLabels: labels}, []string{"reason"}),
		duration: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcd_manager_backup_verify_duration_seconds", Help: "Duration of the last test restore run by this instance.", ConstLabels: labels}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcd_manager_backup_last_verify_ok",
			Help: "1 when the last test restore run by this instance proved the backup good, 0 when it failed, -1 before any.", ConstLabels: labels}),
	}
	vm.lastOK.Set(-1)
	for _, r := range backup.VerifyReasons() {
		vm.failures.WithLabelValues(r)
	}
	k := &m.verify
	vm.lastTime = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "etcd_manager_backup_last_verified_timestamp_seconds",
		Help: "When (Unix seconds) the last test restore that proved a backup good finished (the leader's view, from the store; 0 when none is known).", ConstLabels: labels},
		func() float64 {
			k.mu.Lock()
			defer k.mu.Unlock()
			if k.lastGood == nil {
				return 0
			}
			return float64(k.lastGood.Finished.UnixNano()) / 1e9
		})
	return vm
}

func (vm *verifyMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{vm.runs, vm.failures, vm.duration, vm.lastOK, vm.lastTime}
}

func (vm *verifyMetrics) done(res backup.Verification, took time.Duration) {
	vm.runs.Inc()
	vm.duration.Set(took.Seconds())
	if res.OK {
		vm.lastOK.Set(1)
		return
	}
	vm.lastOK.Set(0)
	vm.failures.WithLabelValues(res.Reason).Inc()
}
