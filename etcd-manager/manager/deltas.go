package manager

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kopsnode/agents/etcd-manager/backup"
)

// deltaKeeper is the leader's delta goroutine (one per leader term, like
// the backup goroutine) and what it last did. It has its own lock: status
// and metrics read it while the goroutine writes segments.
type deltaKeeper struct {
	task termTask[struct{}]

	mu sync.Mutex // guards the fields below
	// follower is the running follower (nil between runs).
	follower *backup.Follower
	// chainBase and chainLen are the current chain's full backup and its
	// segment count (those in the store when this term started it, plus
	// the ones written since).
	chainBase   string
	chainLen    int64
	lastError   string
	lastReason  string
	lastFailure time.Time
	// last is the last durable position this instance knows (kept between
	// runs and after the term ends, for status).
	last *backup.ChainPos
}

type deltaRunner = termRun[struct{}]

// DeltaStatus is the delta part of the status document (the leader's).
type DeltaStatus struct {
	// Interval is the most a change waits to become durable ("0s": off).
	Interval string `json:"interval"`
	// Following is true while the leader follows etcd's watch.
	Following bool `json:"following"`
	// LastDurableRevision is the last revision in a durable segment (or
	// the chain's full backup), and ChainBase that backup.
	LastDurableRevision int64  `json:"lastDurableRevision,omitempty"`
	LastSegment         string `json:"lastSegment,omitempty"`
	ChainBase           string `json:"chainBase,omitempty"`
	ChainLength         int64  `json:"chainLength"`
	// DurableAsOf is the time up to which every change is durable; RPO is
	// now minus it, in seconds (-1 when not following).
	DurableAsOf time.Time `json:"durableAsOf,omitzero"`
	RPOSeconds  float64   `json:"rpoSeconds"`
	// LastError is the last failure (with its reason and time).
	LastError     string    `json:"lastError,omitempty"`
	FailureReason string    `json:"failureReason,omitempty"`
	LastFailure   time.Time `json:"lastFailure,omitzero"`
}

// runDeltas is one leader term's delta goroutine: it finds where the chain
// stands, follows etcd's watch from there writing segments, and starts
// again from the store's state when the follower stops (etcd or the store
// failed, another writer got ahead); when the chain's next revision was
// compacted away it has a full backup taken and starts a new chain from
// it. It never blocks the reconcile tick.
func (m *Manager) runDeltas(ctx context.Context, r *deltaRunner, prev <-chan struct{}) {
	// The previous term's follower writes nothing more once it ends.
	if !waitPrev(ctx, prev) {
		return
	}
	newChain := false
	// wait grows while starts fail in a row (a store that is down, a
	// backup that cannot be taken), so they are not retried every tick.
	wait := m.cfg.Tick
	for ctx.Err() == nil {
		m.mu.Lock()
		src := m.backupSrc
		m.mu.Unlock()
		if src == nil || len(src.targets) == 0 {
			// The cluster is not created or known yet this term.
			sleepCtx(ctx, m.cfg.Tick)
			continue
		}
		followed, err := m.followOnce(ctx, r.term, src, newChain)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errEmptyCluster) {
			sleepCtx(ctx, m.cfg.Tick)
			continue
		}
		newChain = errors.Is(err, backup.ErrCompacted)
		reason := deltaReason(err)
		m.deltaFailed(reason, err)
		if newChain {
			m.logger.Warn("the delta chain is broken: its next revision was compacted; taking a full backup to start a new chain", "err", err)
			continue
		}
		if followed {
			wait = m.cfg.Tick
		} else {
			wait = min(2*wait, time.Minute)
		}
		m.logger.Warn("following etcd for delta segments stopped; starting again", "reason", reason, "err", err, "in", wait)
		sleepCtx(ctx, wait)
	}
}

// errEmptyCluster: nothing was ever written to the cluster yet.
var errEmptyCluster = errors.New("nothing was written to the etcd cluster yet")

func deltaReason(err error) string {
	switch {
	case errors.Is(err, backup.ErrCompacted):
		return backup.ReasonCompacted
	case errors.Is(err, backup.ErrOtherWriter):
		return backup.ReasonOtherWriter
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return backup.ReasonCanceled
	}
	return backup.ReasonOf(err)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// followOnce finds the chain's position and follows etcd from it until
// the follower stops; followed is false when it could not start.
func (m *Manager) followOnce(ctx context.Context, term int64, src *backupSource, newChain bool) (followed bool, err error) {
	var eps []string
	for _, tg := range src.targets {
		eps = append(eps, tg.endpoint)
	}
	c, err := m.newEtcdClient(eps)
	if err != nil {
		return false, &backup.Error{Reason: backup.ReasonEtcd, Err: fmt.Errorf("etcd client for %v: %w", eps, err)}
	}
	defer c.Close()
	pos, chainLen, err := m.chainStart(ctx, c, src, newChain)
	if err != nil {
		return false, err
	}
	k := &m.deltas
	f := backup.NewFollower(c, m.backupStore(), m.layout, pos, backup.FollowOptions{
		Interval: m.cfg.Backups.DeltaInterval,
		Writer:   backup.Writer{LeaderID: m.ID(), LeaderTerm: term},
		MayWrite: func() error {
			if ok, t := m.lease.IsLeader(); !ok || t != term {
				return &backup.Error{Reason: backup.ReasonCanceled, Err: fmt.Errorf("no longer the leader of term %d", term)}
			}
			return nil
		},
		OnSegment: func(s backup.SegmentMeta, took time.Duration) {
			k.mu.Lock()
			k.chainLen++
			p := backup.PosAfter(s)
			k.last = &p
			k.mu.Unlock()
			m.met.delta.segmentWritten(s)
			m.logger.Debug("wrote a delta segment", "segment", s.Name, "events", s.Events, "storedBytes", s.StoredSize, "took", took.Round(time.Millisecond))
		},
		OnFailure: func(reason string, err error) { m.deltaFailed(reason, err) },
		// Event times are wall-clock times a point-in-time restore goes
		// by, not the manager's (possibly fake) clock.
		Now:    time.Now,
		Logger: m.logger,
	})
	k.mu.Lock()
	k.follower, k.chainBase, k.chainLen, k.last = f, pos.Base, chainLen, &pos
	k.mu.Unlock()
	m.logger.Info("following etcd for delta segments", "fromRevision", pos.LastRevision+1, "chainBase", pos.Base, "after", orNone(pos.LastSegment),
		"interval", m.cfg.Backups.DeltaInterval, "store", m.backupStore().URL())
	err = f.Run(ctx)
	k.mu.Lock()
	k.follower = nil
	p := f.Progress().Pos
	k.last = &p
	k.mu.Unlock()
	return true, err
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// chainStart decides where this term's chain continues: after the newest
// segment of this cluster, or, with none (or newChain), from the newest
// full backup of this cluster; a full backup is taken first when there is
// none, or when the chain must start anew (its newest backup's revision
// may already be compacted).
func (m *Manager) chainStart(ctx context.Context, c *clientv3.Client, src *backupSource, newChain bool) (backup.ChainPos, int64, error) {
	st := m.backupStore()
	lctx, cancel := context.WithTimeout(ctx, backupAreaTimeout)
	defer cancel()
	if !newChain {
		s, n, ok, err := backup.LatestSegment(lctx, st, m.layout, src.token)
		if err != nil {
			return backup.ChainPos{}, 0, &backup.Error{Reason: backup.ReasonStore, Err: err}
		}
		if ok {
			return backup.PosAfter(s), n, nil
		}
		fulls, err := backup.List(lctx, st, m.layout)
		if err != nil {
			return backup.ChainPos{}, 0, &backup.Error{Reason: backup.ReasonStore, Err: err}
		}
		for _, f := range fulls.Backups {
			if f.ClusterToken == src.token {
				return backup.PosAtFull(f), 0, nil
			}
		}
	}
	// A cluster nothing was ever written to has no revision a full
	// backup can record; the chain starts after the first write.
	gctx, gcancel := context.WithTimeout(ctx, m.cfg.PeerTimeout)
	resp, err := c.Get(gctx, "\x00", clientv3.WithFromKey(), clientv3.WithCountOnly())
	gcancel()
	if err != nil {
		return backup.ChainPos{}, 0, &backup.Error{Reason: backup.ReasonEtcd, Err: fmt.Errorf("reading the cluster's revision: %w", err)}
	}
	if resp.Header.Revision <= 1 {
		return backup.ChainPos{}, 0, errEmptyCluster
	}
	f, err := m.fullBackupForChain(ctx, src.token)
	if err != nil {
		return backup.ChainPos{}, 0, err
	}
	return backup.PosAtFull(f), 0, nil
}

// fullBackupForChain has the term's backup goroutine take a full backup
// (the one full-backup path) and waits for it.
func (m *Manager) fullBackupForChain(ctx context.Context, token string) (backup.Meta, error) {
	asked := m.now()
	if err := m.requestBackup(backupRequest{reason: "starting a delta chain"}); err != nil {
		return backup.Meta{}, &backup.Error{Reason: backup.ReasonCanceled, Err: err}
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return backup.Meta{}, ctx.Err()
		case <-t.C:
		}
		m.mu.Lock()
		b := m.backups
		m.mu.Unlock()
		if b.attemptStart.Before(asked) || b.attemptEnd.Before(b.attemptStart) {
			continue
		}
		if b.lastError != "" {
			return backup.Meta{}, &backup.Error{Reason: b.lastReason, Err: fmt.Errorf("the full backup a delta chain starts from failed: %s", b.lastError)}
		}
		// The chain starts from a backup that List accepts (the one a
		// restore will find), taken since the request.
		lctx, cancel := context.WithTimeout(ctx, backupAreaTimeout)
		fulls, err := backup.List(lctx, m.backupStore(), m.layout)
		cancel()
		if err != nil {
			return backup.Meta{}, &backup.Error{Reason: backup.ReasonStore, Err: err}
		}
		for _, f := range fulls.Backups {
			if !f.Started.Before(asked) && f.ClusterToken == token {
				return f, nil
			}
		}
		return backup.Meta{}, &backup.Error{Reason: backup.ReasonEtcd, Err: fmt.Errorf("no usable full backup of this cluster taken since %s to start a delta chain from (unusable: %v)", asked.UTC().Format(time.RFC3339), fulls.Invalid)}
	}
}

// deltaFailed records a failure for status and metrics.
func (m *Manager) deltaFailed(reason string, err error) {
	if err == nil {
		return
	}
	k := &m.deltas
	k.mu.Lock()
	k.lastError, k.lastReason, k.lastFailure = err.Error(), reason, m.now()
	k.mu.Unlock()
	m.met.delta.failed(reason)
}

// deltaStatus is the status document's delta part; nil when deltas are
// off or this instance never followed.
func (m *Manager) deltaStatus() *DeltaStatus {
	if m.cfg.Backups.DeltaInterval <= 0 {
		return nil
	}
	k := &m.deltas
	k.mu.Lock()
	defer k.mu.Unlock()
	s := &DeltaStatus{Interval: m.cfg.Backups.DeltaInterval.String(), RPOSeconds: -1, ChainBase: k.chainBase, ChainLength: k.chainLen,
		LastError: k.lastError, FailureReason: k.lastReason, LastFailure: k.lastFailure}
	if k.last != nil {
		s.LastDurableRevision, s.LastSegment = k.last.LastRevision, k.last.LastSegment
	}
	if k.follower != nil {
		p := k.follower.Progress()
		s.Following = true
		s.LastDurableRevision, s.LastSegment = p.Pos.LastRevision, p.Pos.LastSegment
		s.DurableAsOf = p.DurableAsOf
		s.RPOSeconds = time.Since(p.DurableAsOf).Seconds()
	}
	if k.task.current() == nil && k.follower == nil && k.last == nil && k.lastError == "" {
		return nil
	}
	return s
}

// deltaMetrics are the delta chain's metrics.
type deltaMetrics struct {
	rpo      prometheus.GaugeFunc
	chainLen prometheus.GaugeFunc
	lastRev  prometheus.GaugeFunc
	segments prometheus.Counter
	bytes    prometheus.Counter
	failures *prometheus.CounterVec
}

func newDeltaMetrics(m *Manager, labels prometheus.Labels) *deltaMetrics {
	k := &m.deltas
	d := &deltaMetrics{}
	d.rpo = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "etcd_manager_delta_rpo_seconds",
		Help: "Recovery point objective: seconds since the time up to which every change is in a durable delta segment (the leader's; -1 when not following).", ConstLabels: labels},
		func() float64 {
			k.mu.Lock()
			f := k.follower
			k.mu.Unlock()
			if f == nil {
				return -1
			}
			return time.Since(f.Progress().DurableAsOf).Seconds()
		})
	d.chainLen = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "etcd_manager_delta_chain_length",
		Help: "Delta segments in the current chain since its full backup (the leader's view).", ConstLabels: labels},
		func() float64 {
			k.mu.Lock()
			defer k.mu.Unlock()
			return float64(k.chainLen)
		})
	d.lastRev = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "etcd_manager_delta_last_durable_revision",
		Help: "The last etcd revision in a durable delta segment (or the chain's full backup) known to this instance.", ConstLabels: labels},
		func() float64 {
			k.mu.Lock()
			defer k.mu.Unlock()
			if k.follower != nil {
				return float64(k.follower.Progress().Pos.LastRevision)
			}
			if k.last != nil {
				return float64(k.last.LastRevision)
			}
			return 0
		})
	d.segments = prometheus.NewCounter(prometheus.CounterOpts{Name: "etcd_manager_delta_segments_total", Help: "Delta segments written by this instance.", ConstLabels: labels})
	d.bytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "etcd_manager_delta_segment_bytes_total", Help: "Stored (compressed) bytes of delta segments written by this instance.", ConstLabels: labels})
	d.failures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "etcd_manager_delta_failures_total",
		Help: "Delta failures by reason: etcd (the watch broke), store (a segment write failed; retried), compacted (the chain broke; a new one starts from a full backup), other-writer, canceled.", ConstLabels: labels}, []string{"reason"})
	for _, r := range []string{backup.ReasonEtcd, backup.ReasonStore, backup.ReasonCompacted, backup.ReasonOtherWriter, backup.ReasonCanceled} {
		d.failures.WithLabelValues(r)
	}
	return d
}

func (d *deltaMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{d.rpo, d.chainLen, d.lastRev, d.segments, d.bytes, d.failures}
}

func (d *deltaMetrics) segmentWritten(s backup.SegmentMeta) {
	d.segments.Inc()
	d.bytes.Add(float64(s.StoredSize))
}

func (d *deltaMetrics) failed(reason string) { d.failures.WithLabelValues(reason).Inc() }
