package manager

import (
	"context"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/restore"
)

// Retention runs in its own goroutine of the leader's term, beside the
// backup goroutine: after each good full backup and every
// Backups.RetentionInterval it lists the backup area, asks backup.Retain
// what to keep and deletes the rest. A store that does not answer only
// delays it (logged and counted; the next pass tries again); etcd and the
// backups never wait for it.

// retentionState is the leader's memory of its retention passes, guarded
// by m.mu (a field of backupState's owner, the Manager).
type retentionState struct {
	lastRun   time.Time
	lastError string
	lastPlan  *backup.RetentionPlan
	deleted   int
}

// RetentionStatus is the retention part of the status document.
type RetentionStatus struct {
	// Policy is the configured retention.
	Policy backup.Policy `json:"policy"`
	// LastRun is when this instance last applied retention, LastError
	// what failed then ("" when it worked).
	LastRun   time.Time `json:"lastRun,omitzero"`
	LastError string    `json:"lastError,omitempty"`
	// Kept and Protected are from the last pass.
	Kept      int    `json:"kept,omitempty"`
	Protected string `json:"protected,omitempty"`
	// Deleted counts the backups and segments this instance deleted.
	Deleted int `json:"deleted"`
}

// retentionMetrics are retention's metrics.
type retentionMetrics struct {
	runs     prometheus.Counter
	failures prometheus.Counter
	deleted  *prometheus.CounterVec
	kept     prometheus.Gauge
}

func newRetentionMetrics(labels prometheus.Labels) *retentionMetrics {
	rm := &retentionMetrics{
		runs:     prometheus.NewCounter(prometheus.CounterOpts{Name: "etcd_manager_retention_runs_total", Help: "Retention passes run by this instance.", ConstLabels: labels}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "etcd_manager_retention_failures_total", Help: "Retention passes that could not list or delete everything (the store did not answer).", ConstLabels: labels}),
		deleted:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "etcd_manager_retention_deleted_total", Help: "Objects deleted by retention, by kind: full, incomplete, segment.", ConstLabels: labels}, []string{"kind"}),
		kept:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcd_manager_retention_kept_backups", Help: "Full backups kept by the last retention pass.", ConstLabels: labels}),
	}
	for _, k := range []string{"full", "incomplete", "segment"} {
		rm.deleted.WithLabelValues(k)
	}
	return rm
}

func (rm *retentionMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{rm.runs, rm.failures, rm.deleted, rm.kept}
}

// runRetention is one leader term's retention goroutine. It ends with the
// term (ctx).
func (m *Manager) runRetention(ctx context.Context, r *backupRunner) {
	defer m.backupWG.Done()
	defer func() {
		if p := recover(); p != nil {
			m.logger.Error("retention goroutine panicked", "panic", p, "stack", string(debug.Stack()))
		}
	}()
	t := time.NewTicker(m.cfg.Backups.RetentionInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.ch.retain:
		case <-t.C:
		}
		m.applyRetention(ctx, r.term)
	}
}

// nudgeRetention asks the term's retention goroutine for a pass (after a
// good full backup); a pass already asked for is enough.
func nudgeRetention(r *backupRunner) {
	select {
	case r.ch.retain <- struct{}{}:
	default:
	}
}

// applyRetention runs one retention pass for leader term term.
func (m *Manager) applyRetention(ctx context.Context, term int64) {
	if ok, t := m.lease.IsLeader(); !ok || t != term {
		return
	}
	rm := m.met.retention
	// A restore in progress reads its backup (and segments) while it
	// runs: nothing is deleted until it ended. The pass excludes a restore
	// starting beside it (startRestore).
	m.retentionPass.Lock()
	defer m.retentionPass.Unlock()
	actx, acancel := context.WithTimeout(ctx, m.cfg.LeaseDuration)
	rs, active, err := restore.Active(actx, m.cfg.Store, m.layout)
	acancel()
	if err != nil {
		m.retentionFailed(err)
		return
	}
	if active {
		m.logger.Info("retention waits: a restore is in progress", "restore", rs.CommandID)
		return
	}
	rm.runs.Inc()
	st := m.backupStore()
	lctx, cancel := context.WithTimeout(ctx, backupAreaTimeout)
	inv, invalid, err := backup.ReadInventory(lctx, st, m.layout)
	var segs backup.SegmentListing
	if err == nil {
		segs, err = backup.ListSegments(lctx, st, m.layout)
	}
	cancel()
	if err != nil {
		m.retentionFailed(err)
		return
	}
	for _, s := range segs.Segments {
		inv.Segments = append(inv.Segments, backup.SegmentRefOf(m.layout, s))
	}
	for _, i := range append(invalid, segs.Invalid...) {
		m.logger.Warn("retention leaves an unusable backup alone", "backup", i.Name, "err", i.Error)
	}
	now := m.now()
	plan := backup.Retain(inv, now, m.cfg.Backups.Retention)
	// The deletions run under the term: a leader that lost its lease
	// stops, and the new leader's first pass finishes the job.
	res := backup.ApplyRetention(ctx, st, m.layout, plan, m.logger)
	rm.deleted.WithLabelValues("full").Add(float64(res.DeletedFulls))
	rm.deleted.WithLabelValues("incomplete").Add(float64(res.DeletedIncomplete))
	rm.deleted.WithLabelValues("segment").Add(float64(res.DeletedSegments))
	rm.kept.Set(float64(len(plan.Keep)))
	m.mu.Lock()
	m.retention.lastRun = now
	m.retention.lastPlan = &plan
	m.retention.deleted += res.DeletedFulls + res.DeletedIncomplete + res.DeletedSegments
	m.retention.lastError = ""
	if res.Err != nil {
		m.retention.lastError = res.Err.Error()
	}
	m.mu.Unlock()
	if res.Err != nil {
		rm.failures.Inc()
		m.logger.Warn("retention could not delete everything; the next pass tries again", "err", res.Err)
		return
	}
	m.logger.Debug("retention pass", "kept", len(plan.Keep), "protected", plan.Protected, "deleted", len(plan.Delete)+len(plan.DeleteIncomplete)+len(plan.DeleteSegments))
}

func (m *Manager) retentionFailed(err error) {
	m.met.retention.failures.Inc()
	m.mu.Lock()
	m.retention.lastRun = m.now()
	m.retention.lastError = err.Error()
	m.mu.Unlock()
	m.logger.Warn("retention could not list the backups; etcd keeps running, the next pass tries again", "err", err)
}

// retentionStatusLocked is the status document's retention part.
func (m *Manager) retentionStatusLocked() *RetentionStatus {
	r := m.retention
	s := &RetentionStatus{Policy: m.cfg.Backups.Retention, LastRun: r.lastRun, LastError: r.lastError, Deleted: r.deleted}
	if r.lastPlan != nil {
		s.Kept, s.Protected = len(r.lastPlan.Keep), r.lastPlan.Protected
	}
	return s
}
