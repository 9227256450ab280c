package backup_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/pkg/store"
)

// flakyStore fails every write and read while down, as an unreachable
// bucket does.
type flakyStore struct {
	store.Store
	down atomic.Bool
}

func (f *flakyStore) err(op, key string) error {
	return &store.Error{Op: op, URL: store.JoinURL(f.URL(), key), Err: errors.New("connection refused (store down in the test)")}
}

func (f *flakyStore) Put(ctx context.Context, key string, r io.Reader, c store.Condition) (store.Info, error) {
	if f.down.Load() {
		return store.Info{}, f.err("put", key)
	}
	return f.Store.Put(ctx, key, r, c)
}

func (f *flakyStore) Open(ctx context.Context, key string) (io.ReadCloser, store.Info, error) {
	if f.down.Load() {
		return nil, store.Info{}, f.err("open", key)
	}
	return f.Store.Open(ctx, key)
}

// follow runs a follower from pos until the returned stop is called; stop
// returns Run's error.
func follow(t *testing.T, c *clientv3.Client, st store.Store, pos backup.ChainPos, o backup.FollowOptions) (*backup.Follower, func() error) {
	t.Helper()
	f := backup.NewFollower(c, st, layout, pos, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return f, stop
}

// waitDurable waits until the follower's last durable revision is rev.
func waitDurable(t *testing.T, f *backup.Follower, rev int64, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for f.Progress().Pos.LastRevision < rev {
		if time.Since(start) > within {
			t.Fatalf("revision %d not durable after %s: %+v", rev, within, f.Progress())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// writeMix writes puts, deletes, a multi-key transaction and a key under
// a lease, returning the revision after each step.
func writeMix(t *testing.T, c *clientv3.Client, prefix string, n int) []int64 {
	t.Helper()
	ctx := ctxT(t)
	var revs []int64
	for i := 0; i < n; i++ {
		r, err := c.Put(ctx, fmt.Sprintf("%s/k%03d", prefix, i), strings.Repeat("v", i%50)+fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, r.Header.Revision)
	}
	for i := 0; i < n; i += 7 {
		r, err := c.Delete(ctx, fmt.Sprintf("%s/k%03d", prefix, i))
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, r.Header.Revision)
	}
	tr, err := c.Txn(ctx).Then(clientv3.OpPut(prefix+"/txn-a", "1"), clientv3.OpPut(prefix+"/txn-b", "2"), clientv3.OpDelete(prefix+"/k001")).Commit()
	if err != nil {
		t.Fatal(err)
	}
	revs = append(revs, tr.Header.Revision)
	l, err := c.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Put(ctx, prefix+"/leased", "x", clientv3.WithLease(l.ID))
	if err != nil {
		t.Fatal(err)
	}
	// Binary values survive.
	r2, err := c.Put(ctx, prefix+"/bin", string([]byte{0, 1, 2, 0xff, '\n'}))
	if err != nil {
		t.Fatal(err)
	}
	_ = r
	return append(revs, r.Header.Revision, r2.Header.Revision)
}

// dump returns every key's value (and whether it has a lease) at rev (0:
// now), for comparison.
func dump(t *testing.T, c *clientv3.Client, rev int64) map[string]string {
	t.Helper()
	opts := []clientv3.OpOption{clientv3.WithFromKey()}
	if rev != 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := c.Get(ctxT(t), "\x00", opts...)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = fmt.Sprintf("%q leased=%v", kv.Value, kv.Lease != 0)
	}
	return out
}

func sameMaps(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: key %q is %s, want %s", what, k, got[k], v)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: key %q (%s) should not be there", what, k, v)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// TestDeltasFollowAndReplay: on real etcd (3.5, 3.6, 3.7), writes (puts, deletes, a
// transaction, a leased key, binary values) become linked segments within
// the interval after a full backup; the chain checks clean; a fresh etcd
// replayed from the chain (to the latest, and to a revision in between)
// has exactly the source's keys at that revision; a damaged segment is
// found by CheckChain and refused by ReplayDeltas before anything is
// applied.
func TestDeltasFollowAndReplay(t *testing.T) {
	for i, v := range etcdVersions {
		t.Run(v, func(t *testing.T) { testDeltasFollowAndReplay(t, v, fmt.Sprintf("127.91.%d", i+1)) })
	}
}

func testDeltasFollowAndReplay(t *testing.T, version, ipPrefix string) {
	c := startEtcd(t, version, ipPrefix+".1")
	st := fileStore(t)
	base := take(t, c, st, "test")
	interval := 500 * time.Millisecond
	var segs atomic.Int64
	f, stop := follow(t, c, st, backup.PosAtFull(base), backup.FollowOptions{
		Interval: interval, Writer: backup.Writer{LeaderID: "m1", LeaderTerm: 7},
		OnSegment: func(backup.SegmentMeta, time.Duration) { segs.Add(1) },
	})
	revs := writeMix(t, c, "/a", 60)
	took := waitDurable(t, f, revs[len(revs)-1], 10*time.Second)
	// Timings are the benchmark's; this only catches a follower that waits
	// for something other than its interval.
	if took > 5*time.Second {
		t.Fatalf("the last write took %s to become durable with a %s interval", took, interval)
	}
	revs2 := writeMix(t, c, "/b", 30)
	last := revs2[len(revs2)-1]
	waitDurable(t, f, last, 10*time.Second)
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel: %v", err)
	}
	p := f.Progress()
	if p.Unflushed != 0 || p.Segments != segs.Load() || p.Segments < 2 || p.DurableAsOf.IsZero() {
		t.Fatalf("progress %+v, %d segments reported", p, segs.Load())
	}

	ctx := ctxT(t)
	ls, err := backup.ListSegments(ctx, st, layout)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls.Segments) != int(p.Segments) || len(ls.Incomplete) != 0 || len(ls.Invalid) != 0 {
		t.Fatalf("listing %+v, want %d segments", ls, p.Segments)
	}
	fulls := []backup.Meta{base}
	probs, err := backup.CheckChain(ctx, st, fulls, ls.Segments)
	if err != nil || len(probs) != 0 {
		t.Fatalf("CheckChain: %v %v", probs, err)
	}
	first := ls.Segments[0]
	if first.FirstRevision != base.Revision+1 || first.Prev.LastRevision != base.Revision || first.Prev.StoredSHA256 != "" || first.Base != base.Name ||
		ls.Segments[len(ls.Segments)-1].LastRevision != last || first.Writer.LeaderTerm != 7 {
		t.Fatalf("chain from %+v to %d; full backup at %d", first, ls.Segments[len(ls.Segments)-1].LastRevision, base.Revision)
	}
	// A new leader finds the newest segment without reading every meta.
	latest, n, ok, err := backup.LatestSegment(ctx, st, layout, "etcd-test")
	if err != nil || !ok || latest.Name != ls.Segments[len(ls.Segments)-1].Name || n != int64(len(ls.Segments)) {
		t.Fatalf("LatestSegment: %s, chain of %d, %v, %v; want %s, %d", latest.Name, n, ok, err, ls.Segments[len(ls.Segments)-1].Name, len(ls.Segments))
	}
	if _, _, ok, _ := backup.LatestSegment(ctx, st, layout, "another-cluster"); ok {
		t.Fatal("LatestSegment found a segment of another cluster")
	}
	rs := backup.RecoverableRanges(fulls, ls.Segments)
	if len(rs) != 1 || rs[0].From.Revision != base.Revision || rs[0].To.Revision != last {
		t.Fatalf("ranges %v", rs)
	}

	// Replay onto a fresh etcd holding what the full backup held (the
	// "/ready" key of startEtcd), to the latest and to a revision between.
	for _, tc := range []struct {
		name   string
		ip     string
		target backup.Target
		rev    int64
	}{
		{"latest", ipPrefix + ".2", backup.Target{Latest: true}, last},
		{"revision", ipPrefix + ".3", backup.Target{Revision: revs[len(revs)/2]}, revs[len(revs)/2]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := backup.PlanRestore(fulls, ls.Segments, tc.target)
			if err != nil {
				t.Fatal(err)
			}
			fresh := startEtcd(t, version, tc.ip)
			// Both hold the same "/ready"; its value differs in nothing.
			applied, err := backup.ReplayDeltas(ctx, st, layout, plan, backup.TxnApply(fresh, 0))
			if err != nil {
				t.Fatal(err)
			}
			if applied != tc.rev {
				t.Fatalf("applied up to %d, want %d", applied, tc.rev)
			}
			sameMaps(t, "replayed cluster", dump(t, fresh, 0), dump(t, c, tc.rev))
		})
	}

	// Time target: everything received at or before the middle segment's
	// last event.
	mid := ls.Segments[len(ls.Segments)/2]
	plan, err := backup.PlanRestore(fulls, ls.Segments, backup.Target{Time: mid.LastEventTime})
	if err != nil {
		t.Fatal(err)
	}
	n = 0
	applied, err := backup.ReplayDeltas(ctx, st, layout, plan, func(context.Context, int64, []backup.Event) error { n++; return nil })
	if err != nil || applied < mid.LastRevision {
		t.Fatalf("time target %s: applied to %d (segment ends at %d), %v", mid.LastEventTime, applied, mid.LastRevision, err)
	}

	// A damaged segment: CheckChain names it; ReplayDeltas applies nothing.
	bad := ls.Segments[len(ls.Segments)-1]
	b, _, err := store.ReadAll(ctx, st, bad.Object)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if _, err := st.Put(ctx, bad.Object, bytes.NewReader(b), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	probs, err = backup.CheckChain(ctx, st, fulls, ls.Segments)
	if err != nil || len(probs) != 1 || probs[0].Kind != backup.ProblemHash || probs[0].Segment != bad.Name || !strings.Contains(probs[0].Detail, bad.StoredSHA256) {
		t.Fatalf("CheckChain of a damaged segment: %v %v", probs, err)
	}
	plan, _ = backup.PlanRestore(fulls, ls.Segments, backup.Target{Latest: true})
	called := false
	if _, err := backup.ReplayDeltas(ctx, st, layout, plan, func(context.Context, int64, []backup.Event) error { called = true; return nil }); !errors.Is(err, backup.ErrIntegrity) || called {
		t.Fatalf("ReplayDeltas over a damaged segment: err %v, applied something: %v", err, called)
	}
}

// TestDeltasCompacted: a chain whose next revision was compacted away
// ends with ErrCompacted and writes nothing.
func TestDeltasCompacted(t *testing.T) {
	c := startEtcd(t, "3.6.16", "127.91.0.4")
	st := fileStore(t)
	base := take(t, c, st, "test")
	revs := writeMix(t, c, "/a", 20)
	if _, err := c.Compact(ctxT(t), revs[len(revs)-1]); err != nil {
		t.Fatal(err)
	}
	f := backup.NewFollower(c, st, layout, backup.PosAtFull(base), backup.FollowOptions{Interval: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := f.Run(ctx)
	if !errors.Is(err, backup.ErrCompacted) || !strings.Contains(err.Error(), fmt.Sprint(base.Revision+1)) {
		t.Fatalf("Run from a compacted revision: %v", err)
	}
	ls, _ := backup.ListSegments(ctxT(t), st, layout)
	if len(ls.Segments) != 0 {
		t.Fatalf("segments written: %v", ls.Segments)
	}
}

// TestDeltasStoreDown: with the store down, etcd keeps taking writes, the
// follower holds a bounded number of events (it stops reading the watch)
// and counts store failures; when the store is back, the segments resume
// and the chain has no gap.
func TestDeltasStoreDown(t *testing.T) {
	c := startEtcd(t, "3.6.16", "127.91.0.5")
	st := &flakyStore{Store: fileStore(t)}
	base := take(t, c, st, "test")
	var failures atomic.Int64
	f, stop := follow(t, c, st, backup.PosAtFull(base), backup.FollowOptions{
		Interval: 200 * time.Millisecond, MaxSegmentBytes: 4 << 10, RetryBackoff: 100 * time.Millisecond,
		OnFailure: func(reason string, err error) {
			if reason == backup.ReasonStore {
				failures.Add(1)
			}
		},
	})
	revs := writeMix(t, c, "/before", 10)
	waitDurable(t, f, revs[len(revs)-1], 10*time.Second)

	st.down.Store(true)
	revs = writeMix(t, c, "/down", 300)
	time.Sleep(time.Second) // the reader takes in what it will hold
	var p backup.Progress
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if p = f.Progress(); (p.Unflushed > 0 && failures.Load() > 0) || time.Now().After(deadline) {
			break
		}
	}
	// 2 x 4 KiB pending of ~130-byte events plus the segment in flight.
	if p.Unflushed == 0 || p.Unflushed > 200 || failures.Load() == 0 {
		t.Fatalf("store down: %d events held (want 1..200), %d store failures", p.Unflushed, failures.Load())
	}
	st.down.Store(false)
	revs = append(revs, writeMix(t, c, "/after", 10)...)
	waitDurable(t, f, revs[len(revs)-1], 30*time.Second)
	_ = stop()
	ctx := ctxT(t)
	ls, err := backup.ListSegments(ctx, st, layout)
	if err != nil {
		t.Fatal(err)
	}
	probs, err := backup.CheckChain(ctx, st, []backup.Meta{base}, ls.Segments)
	if err != nil || len(probs) != 0 {
		t.Fatalf("chain after the store came back: %v %v", probs, err)
	}
	plan, err := backup.PlanRestore([]backup.Meta{base}, ls.Segments, backup.Target{Latest: true})
	if err != nil || plan.TargetRevision != revs[len(revs)-1] {
		t.Fatalf("plan to %d, want %d: %v", plan.TargetRevision, revs[len(revs)-1], err)
	}
}
