package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/store"
)

// More failure reasons, of the delta follower.
const (
	// ReasonCompacted: the revision the chain continues from was compacted
	// away; the chain is broken and a new one starts from a full backup.
	ReasonCompacted = "compacted"
	// ReasonOtherWriter: another leader term wrote the segment first.
	ReasonOtherWriter = "other-writer"
)

// ErrCompacted is wrapped by Follower.Run's error when the revision the
// chain continues from was compacted away.
var ErrCompacted = errors.New("the delta chain's next revision was compacted")

// DefaultMaxSegmentBytes is the uncompressed size past which a segment is
// written before its interval is up.
const DefaultMaxSegmentBytes = 8 << 20

// ChainPos is where a delta chain stands: the next segment continues it.
type ChainPos struct {
	// Base is the full backup the chain started from.
	Base string `json:"base"`
	// LastRevision is the last revision durable in the chain (the full
	// backup's when no segment follows it yet); LastSegment and LastSHA256
	// name the segment ending there ("" at the chain's start).
	LastRevision int64  `json:"lastRevision"`
	LastSegment  string `json:"lastSegment,omitempty"`
	LastSHA256   string `json:"lastSHA256,omitempty"`
	// LastTime is when the last durable revision was received (the full
	// backup's finish at the chain's start).
	LastTime     time.Time `json:"lastTime"`
	ClusterToken string    `json:"clusterToken,omitempty"`
}

// PosAtFull is the start of a new chain from full backup f.
func PosAtFull(f Meta) ChainPos {
	return ChainPos{Base: f.Name, LastRevision: f.Revision, LastTime: f.Finished, ClusterToken: f.ClusterToken}
}

// PosAfter is the chain continued after segment s.
func PosAfter(s SegmentMeta) ChainPos {
	return ChainPos{Base: s.Base, LastRevision: s.LastRevision, LastSegment: s.Name, LastSHA256: s.StoredSHA256,
		LastTime: s.LastEventTime, ClusterToken: s.ClusterToken}
}

// FollowOptions configure a Follower.
type FollowOptions struct {
	// Interval bounds how long a received event waits before its segment
	// is durable: a segment is written when its oldest event is four
	// fifths of Interval old (earlier when recent writes took longer than
	// a tenth of it: twice their time before the interval is up). Must be
	// positive.
	Interval time.Duration
	// MaxSegmentBytes (uncompressed) writes a segment sooner; the events
	// held in memory are bounded at twice it plus one watch response, and
	// past that the watch is not read (etcd holds the rest).
	MaxSegmentBytes int64
	Writer          Writer
	// MayWrite, when set, is asked before each segment is written; its
	// error ends Run (the leader term ended).
	MayWrite func() error
	// OnSegment and OnFailure, when set, are told of each segment written
	// and each failure (with its reason); called from Run's goroutine.
	OnSegment func(m SegmentMeta, took time.Duration)
	OnFailure func(reason string, err error)
	// RetryBackoff is the wait between attempts to write a segment while
	// the store fails; default 1s.
	RetryBackoff time.Duration
	// ProgressEvery is how often an idle follower asks etcd whether it has
	// seen everything (the RPO of an idle cluster); default 1s.
	ProgressEvery time.Duration
	Now           func() time.Time
	Logger        *slog.Logger
}

// Progress is a follower's state, for status and metrics.
type Progress struct {
	Pos ChainPos `json:"pos"`
	// DurableAsOf is the time up to which every change etcd made is in a
	// durable segment: the receipt time of the oldest event not yet
	// durable, or, with none, the last time the watch was known to have
	// delivered everything. RPO is now minus it.
	DurableAsOf time.Time `json:"durableAsOf"`
	// Unflushed counts events received and not yet durable.
	Unflushed int   `json:"unflushed"`
	Segments  int64 `json:"segments"`
}

// batch is one watch response's events.
type batch struct {
	events []Event
	bytes  int64
	at     time.Time
	// backlog: the events were in etcd before Run started (a new leader
	// catching up): they are written at once, not an interval later.
	backlog bool
}

// Follower follows etcd's watch from a chain position and writes delta
// segments. One Follower runs once.
type Follower struct {
	c   *clientv3.Client
	st  store.Store
	l   control.Layout
	o   FollowOptions
	log *slog.Logger

	mu   sync.Mutex
	cond *sync.Cond
	pos  ChainPos
	// pending are received batches; inflight the ones being written.
	pending      []batch
	pendingBytes int64
	inflight     []batch
	caughtUpAt   time.Time
	segments     int64
	stopped      bool
	kick         chan struct{}
	// backlogRev is etcd's revision when Run started.
	backlogRev int64
}

// NewFollower prepares a follower continuing pos on the cluster c.
func NewFollower(c *clientv3.Client, st store.Store, l control.Layout, pos ChainPos, o FollowOptions) *Follower {
	if o.MaxSegmentBytes <= 0 {
		o.MaxSegmentBytes = DefaultMaxSegmentBytes
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = time.Second
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Follower{c: c, st: st, l: l, o: o, log: log, pos: pos, caughtUpAt: pos.LastTime, kick: make(chan struct{}, 1)}
	f.cond = sync.NewCond(&f.mu)
	return f
}

// Progress returns the follower's state; safe from any goroutine.
func (f *Follower) Progress() Progress {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := Progress{Pos: f.pos, DurableAsOf: f.caughtUpAt, Segments: f.segments}
	for _, bs := range [][]batch{f.inflight, f.pending} {
		for _, b := range bs {
			if p.Unflushed == 0 {
				p.DurableAsOf = b.at
			}
			p.Unflushed += len(b.events)
		}
	}
	return p
}

// Run follows the watch and writes segments until ctx ends (nil error
// then is not returned: ctx's error is) or the chain cannot go on: the
// watch's start revision was compacted (ErrCompacted), another writer
// wrote a segment first (ErrOtherWriter), MayWrite refused, or the watch
// broke (etcd's error). Events received but not durable when the watch
// breaks are written first, so the next Run continues where it stopped.
// While the store fails, writes are retried and the watch is not read
// past the memory bound; etcd keeps running.
func (f *Follower) Run(ctx context.Context) error {
	f.mu.Lock()
	start := f.pos.LastRevision + 1
	f.mu.Unlock()
	// What etcd holds already is overdue: the previous writer (a leader
	// that died) left it unwritten.
	gctx, gcancel := context.WithTimeout(ctx, 5*time.Second)
	if resp, err := f.c.Get(gctx, "\x00", clientv3.WithFromKey(), clientv3.WithCountOnly()); err == nil {
		f.mu.Lock()
		f.backlogRev = resp.Header.Revision
		f.mu.Unlock()
	}
	gcancel()
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := f.c.Watch(wctx, "", clientv3.WithFromKey(), clientv3.WithRev(start), clientv3.WithProgressNotify())
	readErr := make(chan error, 1)
	var reader sync.WaitGroup
	reader.Add(1)
	go func() {
		defer reader.Done()
		readErr <- f.read(wch)
	}()
	defer func() {
		cancel()
		f.mu.Lock()
		f.stopped = true
		f.cond.Broadcast()
		f.mu.Unlock()
		// The reader ends once the cancelled watch closes its channel.
		reader.Wait()
	}()

	progress := time.NewTicker(f.o.ProgressEvery)
	defer progress.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var flushEst time.Duration
	for {
		f.mu.Lock()
		var due time.Duration = -1
		if len(f.pending) > 0 {
			if f.pendingBytes >= f.o.MaxSegmentBytes || f.pending[0].backlog {
				due = 0
			} else {
				// Written early enough that the write itself, and a
				// loaded machine's late timer, still fit in the interval.
				due = max(0, f.pending[0].at.Add(f.o.Interval-max(2*flushEst, f.o.Interval/5)).Sub(f.o.Now()))
			}
		}
		f.mu.Unlock()
		if due == 0 {
			took, err := f.flush(ctx)
			if err != nil {
				return err
			}
			flushEst = min((flushEst*3+took)/4, f.o.Interval/2)
			continue
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		var tc <-chan time.Time
		if due > 0 {
			timer.Reset(due)
			tc = timer.C
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-readErr:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// Write what was received, so the chain ends at a revision
			// boundary the next Run continues from.
			f.mu.Lock()
			n := len(f.pending)
			f.mu.Unlock()
			for n > 0 && !errors.Is(err, ErrCompacted) {
				if _, ferr := f.flush(ctx); ferr != nil {
					return errors.Join(err, ferr)
				}
				f.mu.Lock()
				n = len(f.pending)
				f.mu.Unlock()
			}
			return err
		case <-f.kick:
		case <-tc:
		case <-progress.C:
			f.mu.Lock()
			idle := len(f.pending) == 0
			f.mu.Unlock()
			if idle {
				rctx, rcancel := context.WithTimeout(wctx, f.o.ProgressEvery)
				if err := f.c.RequestProgress(rctx); err != nil && ctx.Err() == nil {
					f.log.Debug("asking etcd for watch progress", "err", err)
				}
				rcancel()
			}
		}
	}
}

// read moves watch responses into pending until the watch ends.
func (f *Follower) read(wch clientv3.WatchChan) error {
	for resp := range wch {
		if resp.CompactRevision != 0 {
			f.mu.Lock()
			start := f.pos.LastRevision + 1
			f.mu.Unlock()
			return fmt.Errorf("%w: revision %d (the chain's next) is older than etcd's compacted revision %d", ErrCompacted, start, resp.CompactRevision)
		}
		if err := resp.Err(); err != nil {
			return fmt.Errorf("watching etcd from revision %d: %w", f.Progress().Pos.LastRevision+1, err)
		}
		now := f.o.Now()
		if resp.IsProgressNotify() {
			f.mu.Lock()
			if len(f.pending) == 0 && len(f.inflight) == 0 && resp.Header.Revision <= f.pos.LastRevision {
				f.caughtUpAt = now
			}
			f.mu.Unlock()
			continue
		}
		b := batch{at: now, events: make([]Event, 0, len(resp.Events))}
		for _, ev := range resp.Events {
			kv := ev.Kv
			e := Event{Revision: kv.ModRevision, Type: EventPut, Key: kv.Key, Value: kv.Value, Lease: kv.Lease,
				CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version, Observed: now.UnixNano()}
			if ev.Type == mvccpb.DELETE {
				e.Type, e.Value, e.Lease = EventDelete, nil, 0
			}
			b.events = append(b.events, e)
			b.bytes += int64(len(kv.Key)+len(e.Value))*4/3 + 120
		}
		if len(b.events) == 0 {
			continue
		}
		f.mu.Lock()
		b.backlog = b.events[len(b.events)-1].Revision <= f.backlogRev
		// Backpressure: while writes are blocked, stop reading the watch.
		for f.pendingBytes >= 2*f.o.MaxSegmentBytes && !f.stopped {
			f.cond.Wait()
		}
		if f.stopped {
			f.mu.Unlock()
			return nil
		}
		f.pending = append(f.pending, b)
		f.pendingBytes += b.bytes
		f.mu.Unlock()
		select {
		case f.kick <- struct{}{}:
		default:
		}
	}
	return errors.New("the watch on etcd ended")
}

// flush writes the oldest pending batches (up to MaxSegmentBytes, at least
// one) as one segment, retrying while the store fails.
func (f *Follower) flush(ctx context.Context) (time.Duration, error) {
	f.mu.Lock()
	var size int64
	n := 0
	for n < len(f.pending) && (n == 0 || size+f.pending[n].bytes <= f.o.MaxSegmentBytes) {
		size += f.pending[n].bytes
		n++
	}
	f.inflight = f.pending[:n:n]
	f.pending = f.pending[n:]
	f.pendingBytes -= size
	pos := f.pos
	batches := f.inflight
	f.mu.Unlock()

	var events []Event
	for _, b := range batches {
		events = append(events, b.events...)
	}
	first, last := pos.LastRevision+1, events[len(events)-1].Revision
	data, rawSize, err := encodeSegment(events)
	if err != nil {
		return 0, err
	}
	sum := sha256.Sum256(data)
	name := SegmentName(first, last)
	m := SegmentMeta{
		FormatVersion: FormatVersion, Name: name, Kind: KindDelta, Object: SegmentDataKey(f.l, name), Compression: CompressionGzip,
		FirstRevision: first, LastRevision: last, Events: int64(len(events)),
		FirstEventTime: batches[0].at.UTC(), LastEventTime: batches[len(batches)-1].at.UTC(),
		Size: rawSize, StoredSize: int64(len(data)), StoredSHA256: hex.EncodeToString(sum[:]),
		Prev: Link{LastRevision: pos.LastRevision, StoredSHA256: pos.LastSHA256, Segment: pos.LastSegment},
		Base: pos.Base, ClusterToken: pos.ClusterToken, Writer: f.o.Writer,
	}
	for {
		if f.o.MayWrite != nil {
			if err := f.o.MayWrite(); err != nil {
				return 0, err
			}
		}
		start := f.o.Now()
		m.Written = start.UTC()
		err := writeSegment(ctx, f.st, f.l, m, data)
		took := f.o.Now().Sub(start)
		if err == nil {
			f.mu.Lock()
			f.pos = PosAfter(m)
			f.inflight = nil
			f.segments++
			if len(f.pending) == 0 {
				f.caughtUpAt = batches[len(batches)-1].at
			}
			f.cond.Broadcast()
			f.mu.Unlock()
			if f.o.OnSegment != nil {
				f.o.OnSegment(m, took)
			}
			return took, nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		reason := ReasonStore
		if errors.Is(err, ErrOtherWriter) {
			reason = ReasonOtherWriter
		}
		if f.o.OnFailure != nil {
			f.o.OnFailure(reason, err)
		}
		if reason == ReasonOtherWriter {
			return 0, err
		}
		f.log.Warn("writing a delta segment failed; retrying (etcd keeps running)", "segment", name, "err", err)
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(f.o.RetryBackoff):
		}
	}
}
