package manager_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/harness"
	"github.com/kopsnode/agents/etcd-manager/manager"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/file"
)

// downStore fails every operation while down, as an unreachable bucket.
type downStore struct {
	store.Store
	down atomic.Bool
}

func (d *downStore) fail(op, key string) error {
	return &store.Error{Op: op, URL: store.JoinURL(d.URL(), key), Err: errors.New("connection refused (store down in the test)")}
}

func (d *downStore) Put(ctx context.Context, key string, r io.Reader, c store.Condition) (store.Info, error) {
	if d.down.Load() {
		return store.Info{}, d.fail("put", key)
	}
	return d.Store.Put(ctx, key, r, c)
}

func (d *downStore) Open(ctx context.Context, key string) (io.ReadCloser, store.Info, error) {
	if d.down.Load() {
		return nil, store.Info{}, d.fail("open", key)
	}
	return d.Store.Open(ctx, key)
}

func (d *downStore) List(ctx context.Context, prefix string) ([]store.Info, error) {
	if d.down.Load() {
		return nil, d.fail("list", prefix)
	}
	return d.Store.List(ctx, prefix)
}

func newDownStore(t testing.TB) *downStore {
	fs, err := file.New(filepath.Join(t.TempDir(), "backups"), file.Options{CreateRoot: true})
	if err != nil {
		t.Fatal(err)
	}
	return &downStore{Store: fs}
}

// deltaCluster is a harness cluster whose instances write deltas every
// 300ms into bst, each with its own metrics registry.
func deltaCluster(t testing.TB, prefix string, bst store.Store) (*harness.Cluster, map[string]*prometheus.Registry) {
	regs := map[string]*prometheus.Registry{}
	var mu sync.Mutex
	c := harness.New(t, harness.Options{IPPrefix: prefix, Versions: []string{version}, Mutate: func(cfg *manager.Config) {
		cfg.Backups.Interval = time.Hour
		cfg.Backups.Store = bst
		cfg.Backups.DeltaInterval = 300 * time.Millisecond
		reg := prometheus.NewRegistry()
		mu.Lock()
		regs[cfg.ID] = reg
		mu.Unlock()
		cfg.MetricsRegistry = reg
	}})
	return c, regs
}

// writer puts keys until stopped, recording the acknowledged ones (a put
// that fails during a leader change is retried under a new key).
type writer struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	keys   map[string]int64 // key -> revision
	last   int64
}

func startWriter(cl *clientv3.Client, prefix string, every time.Duration) *writer {
	ctx, cancel := context.WithCancel(context.Background())
	w := &writer{cancel: cancel, done: make(chan struct{}), keys: map[string]int64{}}
	go func() {
		defer close(w.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			k := fmt.Sprintf("%s/%06d", prefix, i)
			pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
			r, err := cl.Put(pctx, k, "v")
			pcancel()
			if err == nil {
				w.mu.Lock()
				w.keys[k] = r.Header.Revision
				w.last = max(w.last, r.Header.Revision)
				w.mu.Unlock()
			}
		}
	}()
	return w
}

func (w *writer) stop() (map[string]int64, int64) {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.keys, w.last
}

// lastDurable is the last durable revision the leader reports.
func lastDurable(c *harness.Cluster, id string) (manager.DeltaStatus, error) {
	in := c.Instance(id)
	if in == nil {
		return manager.DeltaStatus{}, fmt.Errorf("%s not running", id)
	}
	st, err := in.M.Status(context.Background())
	if err != nil {
		return manager.DeltaStatus{}, err
	}
	if st.Deltas == nil || !st.Deltas.Following {
		return manager.DeltaStatus{}, fmt.Errorf("%s does not follow etcd: %+v", id, st.Deltas)
	}
	return *st.Deltas, nil
}

// TestDeltasAcrossLeaderKill: a 3-member cluster under a steady write load
// writes delta segments; its leader's machine dies (Manager.Kill) while
// writes go on; the new leader continues the chain from the last durable
// revision: CheckChain finds no gap, overlap or duplicate, both leaders
// wrote segments, and every acknowledged write is in the full backup plus
// the deltas a restore to the latest would replay. Status and metrics
// show the last durable revision, the RPO and the chain length.
func TestDeltasAcrossLeaderKill(t *testing.T) {
	t.Parallel()
	bst := newDownStore(t)
	c, regs := deltaCluster(t, "127.91.10", bst)
	c.SetSpec(3, version)
	for i := 1; i <= 3; i++ {
		c.Start(i)
	}
	c.WaitMembers(converge, "m1", "m2", "m3")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The chain starts from the term's first full backup. The leader is
	// read on every try: with the harness's 2 s lease it may change while
	// the cluster settles, and the one killed is the one writing.
	w := startWriter(c.Client("m1", "m2", "m3"), "/registry/w", 20*time.Millisecond)
	var leader string
	c.Eventually(converge, "segments from the first leader", func() error {
		ls := c.Leaders()
		if len(ls) != 1 {
			return fmt.Errorf("leaders %v", ls)
		}
		leader = ls[0]
		d, err := lastDurable(c, leader)
		if err != nil {
			return err
		}
		if d.ChainLength < 3 {
			return fmt.Errorf("chain of %d segments", d.ChainLength)
		}
		segs, err := backup.ListSegments(ctx, bst, c.Layout)
		if err != nil {
			return err
		}
		if n := len(segs.Segments); n == 0 || segs.Segments[n-1].Writer.LeaderID != leader {
			return fmt.Errorf("the newest segment is not yet %s's", leader)
		}
		return nil
	})
	c.Kill(leader)
	var next string
	c.Eventually(converge, "a new leader following etcd", func() error {
		ls := c.Leaders()
		if len(ls) != 1 {
			return fmt.Errorf("leaders %v", ls)
		}
		next = ls[0]
		d, err := lastDurable(c, next)
		if err != nil {
			return err
		}
		if d.ChainLength < 6 {
			return fmt.Errorf("chain of %d segments", d.ChainLength)
		}
		return nil
	})
	keys, last := w.stop()
	var d manager.DeltaStatus
	c.Eventually(converge, "the last write durable", func() error {
		var err error
		if d, err = lastDurable(c, next); err != nil {
			return err
		}
		if d.LastDurableRevision < last {
			return fmt.Errorf("durable to %d, last write %d", d.LastDurableRevision, last)
		}
		return nil
	})
	if d.RPOSeconds < 0 || d.RPOSeconds > 30 || d.ChainBase == "" || d.LastSegment == "" {
		t.Fatalf("delta status %+v", d)
	}
	reg := regs[next]
	if v := metric(t, reg, "etcd_manager_delta_last_durable_revision", nil); v < float64(last) {
		t.Fatalf("last durable revision metric %v, want >= %d", v, last)
	}
	if v := metric(t, reg, "etcd_manager_delta_segments_total", nil); v < 1 {
		t.Fatalf("segments metric %v", v)
	}
	if v := metric(t, reg, "etcd_manager_delta_rpo_seconds", nil); v < 0 || v > 30 {
		t.Fatalf("RPO metric %v", v)
	}
	if v := metric(t, reg, "etcd_manager_delta_chain_length", nil); v < 6 {
		t.Fatalf("chain length metric %v", v)
	}

	ls, err := backup.ListSegments(ctx, bst, c.Layout)
	if err != nil {
		t.Fatal(err)
	}
	fulls, err := backup.List(ctx, bst, c.Layout)
	if err != nil {
		t.Fatal(err)
	}
	probs, err := backup.CheckChain(ctx, bst, fulls.Backups, ls.Segments)
	if err != nil || len(probs) != 0 || len(ls.Invalid) != 0 {
		t.Fatalf("chain: problems %v, err %v, invalid %v", probs, err, ls.Invalid)
	}
	writers := map[string]bool{}
	var killedLast int64 // the last revision of the killed leader's segments
	for _, s := range ls.Segments {
		writers[s.Writer.LeaderID] = true
		if s.Writer.LeaderID == leader {
			killedLast = max(killedLast, s.LastRevision)
		}
	}
	// A leader killed between a segment's data and its meta leaves that
	// data behind (retention removes it): at most one such object, and
	// only the one the killed leader was writing next.
	for i, name := range ls.Incomplete {
		first, _, err := backup.ParseSegmentName(name)
		if i > 0 || err != nil || first != killedLast+1 {
			t.Fatalf("incomplete segments %v: only the killed leader's next one (from revision %d) may be left", ls.Incomplete, killedLast+1)
		}
	}
	if !writers[leader] || !writers[next] {
		t.Fatalf("segments written by %v; want both %s and %s", writers, leader, next)
	}
	plan, err := backup.PlanRestore(fulls.Backups, ls.Segments, backup.Target{Latest: true})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int64{}
	applied, err := backup.ReplayDeltas(ctx, bst, c.Layout, plan, func(_ context.Context, rev int64, evs []backup.Event) error {
		for _, e := range evs {
			seen[string(e.Key)] = rev
		}
		return nil
	})
	if err != nil || applied < last {
		t.Fatalf("replay to %d (last write %d): %v", applied, last, err)
	}
	missing := 0
	for k, rev := range keys {
		if rev <= plan.Base.Revision {
			continue // in the full backup
		}
		if seen[k] != rev {
			missing++
			if missing < 5 {
				t.Errorf("write of %s at revision %d is not in the deltas (seen at %d)", k, rev, seen[k])
			}
		}
	}
	if missing > 0 || len(keys) < 50 {
		t.Fatalf("%d of %d acknowledged writes missing from full backup %s + deltas", missing, len(keys), plan.Base.Name)
	}
	t.Logf("%d writes, %d segments by %v, chain from %s (revision %d) to %d", len(keys), len(ls.Segments), writers, plan.Base.Name, plan.Base.Revision, applied)
}

// TestDeltasCompactedNewChain: while the backup store is down, etcd keeps
// serving and delta failures are counted by reason "store"; the revision
// after the last durable segment is then compacted and the machine dies
// before the store is back. The restarted leader finds the chain's next
// revision compacted, has a full backup taken and starts a new chain from
// it: two chains, no defect, two recoverable ranges, and the compaction
// counted.
func TestDeltasCompactedNewChain(t *testing.T) {
	t.Parallel()
	bst := newDownStore(t)
	c, regs := deltaCluster(t, "127.91.11", bst)
	c.SetSpec(1, version)
	c.Start(1)
	c.WaitMembers(converge, "m1")
	c.WaitLeader(converge)
	cl := c.Client("m1")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	put := func(k string) int64 {
		r, err := cl.Put(ctx, k, "v")
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.Revision
	}
	// A chain starts after the cluster's first write.
	put("/first")
	c.Eventually(converge, "following etcd", func() error { _, err := lastDurable(c, "m1"); return err })
	var rev int64
	for i := 0; i < 20; i++ {
		rev = put(fmt.Sprintf("/before/%d", i))
	}
	c.Eventually(converge, "first writes in a segment", func() error {
		d, err := lastDurable(c, "m1")
		if err != nil {
			return err
		}
		if d.LastDurableRevision < rev || d.LastSegment == "" {
			return fmt.Errorf("durable to %d (segment %q), want %d", d.LastDurableRevision, d.LastSegment, rev)
		}
		return nil
	})
	bst.down.Store(true)
	for i := 0; i < 20; i++ {
		rev = put(fmt.Sprintf("/down/%d", i)) // etcd keeps serving
	}
	c.Eventually(converge, "store failures counted", func() error {
		if v := metric(t, regs["m1"], "etcd_manager_delta_failures_total", map[string]string{"reason": "store"}); v < 1 {
			return fmt.Errorf("store failures %v", v)
		}
		return nil
	})
	compactRev := rev
	if _, err := cl.Compact(ctx, compactRev); err != nil {
		t.Fatal(err)
	}
	c.Kill("m1")
	bst.down.Store(false)
	c.Start(1)
	c.WaitLeader(converge)
	c.Eventually(converge, "a new chain", func() error {
		d, err := lastDurable(c, "m1")
		if err != nil {
			return err
		}
		if d.LastDurableRevision < compactRev || d.LastSegment != "" {
			return fmt.Errorf("following from %d (segment %q), want a new chain from a full backup at or after %d", d.LastDurableRevision, d.LastSegment, compactRev)
		}
		return nil
	})
	cl = c.Client("m1")
	for i := 0; i < 20; i++ {
		r, err := cl.Put(ctx, fmt.Sprintf("/after/%d", i), "v")
		if err != nil {
			t.Fatal(err)
		}
		rev = r.Header.Revision
	}
	c.Eventually(converge, "a new chain durable past the last write", func() error {
		d, err := lastDurable(c, "m1")
		if err != nil {
			return err
		}
		if d.LastDurableRevision < rev {
			return fmt.Errorf("durable to %d, want %d", d.LastDurableRevision, rev)
		}
		return nil
	})
	if v := metric(t, regs["m1"], "etcd_manager_delta_failures_total", map[string]string{"reason": "compacted"}); v < 1 {
		t.Fatalf("compacted failures %v", v)
	}
	ls, err := backup.ListSegments(ctx, bst, c.Layout)
	if err != nil {
		t.Fatal(err)
	}
	fulls, err := backup.List(ctx, bst, c.Layout)
	if err != nil {
		t.Fatal(err)
	}
	probs, err := backup.CheckChain(ctx, bst, fulls.Backups, ls.Segments)
	if err != nil || len(probs) != 0 {
		t.Fatalf("chains: %v %v", probs, err)
	}
	starts := 0
	for _, s := range ls.Segments {
		if s.Prev.StoredSHA256 == "" {
			starts++
		}
	}
	rs := backup.RecoverableRanges(fulls.Backups, ls.Segments)
	if starts != 2 || len(rs) != 2 || rs[1].To.Revision < rev {
		t.Fatalf("%d chain starts, ranges %v (last write %d)", starts, rs, rev)
	}
	// The newer chain starts from a full backup taken after the break,
	// whose revision holds the writes made while the store was down.
	nb := rs[1].Base
	var newBase backup.Meta
	for _, f := range fulls.Backups {
		if f.Name == nb {
			newBase = f
		}
	}
	if newBase.Reason != "starting a delta chain" || newBase.Revision < compactRev {
		t.Fatalf("new chain's base %+v", newBase)
	}
	// list-backups shows both ranges.
	out, errs, code := runCtl(t, "list-backups", "--store", c.Store.URL(), "--backup-store", bst.URL(), "--cluster-name", c.Layout.Cluster)
	if code != 0 || !strings.Contains(out, "recoverable") || !strings.Contains(out, rs[1].Base) {
		t.Fatalf("list-backups: %d %s %s", code, out, errs)
	}
}
