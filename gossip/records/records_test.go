package records

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/kopsnode/agents/gossip/hlc"
)

type fakeTime struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeTime) now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeTime) add(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

type node struct {
	t   *Table
	reg *prometheus.Registry
}

func newNode(t *testing.T, name string, ft *fakeTime, skew time.Duration) node {
	t.Helper()
	cfg := DefaultConfig(name)
	cfg.Clock = hlc.New(func() time.Time { return ft.now().Add(skew) }, time.Minute)
	cfg.Now = ft.now
	cfg.LeaveGrace = 10 * time.Second
	cfg.TombstoneTTL = time.Minute
	cfg.SweepInterval = time.Hour // tests call sweep directly
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	tb, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	return node{t: tb, reg: reg}
}

// deliver moves every queued broadcast of from to to.
func deliver(from, to *Table) {
	for _, b := range from.Delegate().GetBroadcasts(0, 1<<20) {
		to.Delegate().NotifyMsg(b)
	}
}

func pushPull(a, b *Table) {
	sa := a.Delegate().LocalState(true)
	sb := b.Delegate().LocalState(true)
	b.Delegate().MergeRemoteState(sa, true)
	a.Delegate().MergeRemoteState(sb, true)
}

func TestBroadcastReplicatesPutAndDelete(t *testing.T) {
	ft := &fakeTime{t: time.Unix(1_700_000_000, 0)}
	a, b := newNode(t, "a", ft, 0), newNode(t, "b", ft, 0)
	if err := a.t.Put("dns/api", []byte("10.0.0.1")); err != nil {
		t.Fatal(err)
	}
	deliver(a.t, b.t)
	if r, ok := b.t.Get("a", "dns/api"); !ok || string(r.Value) != "10.0.0.1" {
		t.Fatalf("b has %v %v, want a's record", r, ok)
	}
	var h dto.Metric
	if err := b.t.metrics.lag.Write(&h); err != nil || h.GetHistogram().GetSampleCount() != 1 {
		t.Fatalf("convergence lag samples = %d (%v), want 1", h.GetHistogram().GetSampleCount(), err)
	}
	if err := a.t.Delete("dns/api"); err != nil {
		t.Fatal(err)
	}
	deliver(a.t, b.t)
	if _, ok := b.t.Lookup("dns/api"); ok {
		t.Fatal("deleted record still visible on b")
	}
	if r, _ := b.t.Get("a", "dns/api"); !r.Deleted {
		t.Fatalf("b holds %v, want a tombstone", r)
	}
}

func TestFullStateSyncOnJoin(t *testing.T) {
	ft := &fakeTime{t: time.Unix(1_700_000_000, 0)}
	a, b := newNode(t, "a", ft, 0), newNode(t, "b", ft, 0)
	a.t.Put("k1", []byte("1"))
	b.t.Put("k2", []byte("2"))
	pushPull(a.t, b.t)
	for _, n := range []*Table{a.t, b.t} {
		if _, ok := n.Lookup("k1"); !ok {
			t.Fatalf("%s lacks k1", n.NodeName())
		}
		if _, ok := n.Lookup("k2"); !ok {
			t.Fatalf("%s lacks k2", n.NodeName())
		}
	}
}

// A node whose clock is 20 s ahead (inside the maximum offset) writes k; an
// honest node writes k after receiving that. Ordered by wall time the skewed
// write would win; ordered by HLC the causally later write wins.
func TestCausallyLaterWriteWinsOverSkewedClock(t *testing.T) {
	ft := &fakeTime{t: time.Unix(1_700_000_000, 0)}
	honest, skewed := newNode(t, "honest", ft, 0), newNode(t, "skewed", ft, 20*time.Second)
	skewed.t.Put("leader", []byte("skewed"))
	deliver(skewed.t, honest.t)
	ft.add(time.Second)
	honest.t.Put("leader", []byte("honest"))
	deliver(honest.t, skewed.t)
	for _, n := range []*Table{honest.t, skewed.t} {
		r, ok := n.Lookup("leader")
		if !ok || string(r.Value) != "honest" {
			t.Fatalf("%s: Lookup(leader) = %v, want the honest node's later write", n.NodeName(), r)
		}
	}
}

// A node an hour ahead is beyond the maximum offset: its records are refused
// and counted, and they do not move the honest node's clock.
func TestFarFutureRecordsRefused(t *testing.T) {
	ft := &fakeTime{t: time.Unix(1_700_000_000, 0)}
	honest, skewed := newNode(t, "honest", ft, 0), newNode(t, "skewed", ft, time.Hour)
	skewed.t.Put("leader", []byte("skewed"))
	deliver(skewed.t, honest.t)
	if _, ok := honest.t.Get("skewed", "leader"); ok {
		t.Fatal("record from a clock an hour ahead was accepted")
	}
	if got := counterValue(honest.t.metrics.dropped.WithLabelValues("clock_ahead")); got != 1 {
		t.Fatalf("clock_ahead drops = %v, want 1", got)
	}
	if last := honest.t.cfg.Clock.Last(); last.Time().After(ft.now().Add(time.Minute)) {
		t.Fatalf("honest clock dragged to %v", last)
	}
}

func TestTombstoneExpires(t *testing.T) {
	ft := &fakeTime{t: time.Unix(1_700_000_000, 0)}
	a := newNode(t, "a", ft, 0)
	a.t.Put("k", []byte("v"))
	a.t.Delete("k")
	if _, tomb := a.t.Counts(); tomb != 1 {
		t.Fatalf("tombstones = %d, want 1", tomb)
	}
	ft.add(59 * time.Second)
	a.t.sweep()
	if _, tomb := a.t.Counts(); tomb != 1 {
		t.Fatal("tombstone expired before its TTL")
	}
	ft.add(2 * time.Second)
	a.t.sweep()
	if live, tomb := a.t.Counts(); tomb != 0 || live != 0 {
		t.Fatalf("after TTL: live=%d tombstones=%d, want 0 0", live, tomb)
	}
}

func TestDepartedOwnerWithdrawnAfterGrace(t *testing.T) {
	ft := &fakeTime{t: time.Unix(1_700_000_000, 0)}
	a, b, c := newNode(t, "a", ft, 0), newNode(t, "b", ft, 0), newNode(t, "c", ft, 0)
	b.t.Put("dns/b", []byte("10.0.0.2"))
	pushPull(a.t, b.t)
	pushPull(c.t, b.t)
	a.t.Events().NotifyJoin(&memberlist.Node{Name: "b"})
	a.t.Events().NotifyLeave(&memberlist.Node{Name: "b"})
	ft.add(5 * time.Second)
	a.t.sweep()
	if _, ok := a.t.Get("b", "dns/b"); !ok {
		t.Fatal("withdrawn before the grace period")
	}
	ft.add(6 * time.Second)
	a.t.sweep()
	if _, ok := a.t.Get("b", "dns/b"); ok {
		t.Fatal("record of a departed node not withdrawn after the grace period")
	}
	// c has not withdrawn b yet; its state must not resurrect b's records.
	pushPull(a.t, c.t)
	if _, ok := a.t.Get("b", "dns/b"); ok {
		t.Fatal("withdrawn record resurrected by a peer's state")
	}
	// b comes back: its records are accepted again.
	a.t.Events().NotifyJoin(&memberlist.Node{Name: "b"})
	pushPull(a.t, b.t)
	if _, ok := a.t.Get("b", "dns/b"); !ok {
		t.Fatal("records of a rejoined node not accepted")
	}
}

// A node restarted without its old state learns its previous run's records
// from peers and re-asserts its current state with a newer version.
func TestOwnRecordsFromPreviousRunAreSuperseded(t *testing.T) {
	ft := &fakeTime{t: time.Unix(1_700_000_000, 0)}
	old, peer := newNode(t, "a", ft, 0), newNode(t, "peer", ft, 0)
	old.t.Put("stale", []byte("x"))
	old.t.Put("kept", []byte("old"))
	pushPull(old.t, peer.t)
	// The restarted node's clock is behind the old run's versions.
	restarted := newNode(t, "a", ft, -10*time.Second)
	restarted.t.Put("kept", []byte("new"))
	pushPull(restarted.t, peer.t)
	deliver(restarted.t, peer.t)
	if r, ok := peer.t.Lookup("kept"); !ok || string(r.Value) != "new" {
		t.Fatalf("peer sees kept=%v, want the restarted node's value", r)
	}
	if r, ok := peer.t.Lookup("stale"); ok {
		t.Fatalf("peer still sees %v from the previous run", r)
	}
}

func TestMalformedAndOversizedDroppedAndCounted(t *testing.T) {
	ft := &fakeTime{t: time.Unix(1_700_000_000, 0)}
	a := newNode(t, "a", ft, 0)
	big := &Record{Owner: "x", Key: "k", Value: bytes.Repeat([]byte("v"), 600), Version: hlc.Timestamp{Wall: ft.now().UnixNano()}}
	for _, msg := range [][]byte{nil, {0}, {'K', 9}, {'K', 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, encode([]*Record{big})} {
		a.t.Delegate().NotifyMsg(msg)
		a.t.Delegate().MergeRemoteState(msg, false)
	}
	if got := counterValue(a.t.metrics.dropped.WithLabelValues("malformed")); got != 10 {
		t.Fatalf("malformed drops = %v, want 10", got)
	}
	if err := a.t.Put("k", bytes.Repeat([]byte("v"), 600)); err == nil {
		t.Fatal("Put of an oversized value succeeded")
	}
	if live, _ := a.t.Counts(); live != 0 {
		t.Fatalf("%d records stored from bad input", live)
	}
}

func TestConfigValidateNamesFields(t *testing.T) {
	cfg := DefaultConfig("")
	cfg.LeaveGrace = 0
	err := cfg.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{"records.NodeName", "records.Clock", "records.LeaveGrace"} {
		if !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(encode([]*Record{{Owner: "a", Key: "k", Value: []byte("v"), Version: hlc.Timestamp{Wall: 5, Logical: 1}}}))
	f.Add([]byte{'K', 1, 0})
	lim := Limits{MaxOwnerLen: 128, MaxKeyLen: 256, MaxValueLen: 512, MaxRecords: 1000}
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := decode(b, lim)
		if err != nil {
			return
		}
		ptrs := make([]*Record, len(recs))
		for i := range recs {
			ptrs[i] = &recs[i]
		}
		again, err := decode(encode(ptrs), lim)
		if err != nil || len(again) != len(recs) {
			t.Fatalf("re-encoding a decoded message failed: %v", err)
		}
	})
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// A joining node must not re-broadcast the whole table it received; only
// records young enough to still be spreading are passed on.
func TestStateMergeRebroadcastsOnlyRecentRecords(t *testing.T) {
	ft := &fakeTime{t: time.Unix(1_700_000_000, 0)}
	a, b := newNode(t, "a", ft, 0), newNode(t, "b", ft, 0)
	a.t.Put("old", []byte("1"))
	ft.add(time.Minute)
	a.t.Put("new", []byte("2"))
	b.t.Delegate().MergeRemoteState(a.t.Delegate().LocalState(true), true)
	var keys []string
	for _, msg := range b.t.Delegate().GetBroadcasts(0, 1<<20) {
		recs, err := decode(msg, b.t.limits)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			keys = append(keys, r.Key)
		}
	}
	if len(keys) != 1 || keys[0] != "new" {
		t.Fatalf("b re-broadcast %v, want only the recent record", keys)
	}
	if _, ok := b.t.Get("a", "old"); !ok {
		t.Fatal("old record not merged")
	}
}

// Records of an owner that memberlist never reports alive (a node already
// dead, whose records a peer still carries) are withdrawn after the grace
// period rather than kept forever.
func TestRecordsOfUnseenOwnerWithdrawn(t *testing.T) {
	ft := &fakeTime{t: time.Unix(1_700_000_000, 0)}
	a, ghost := newNode(t, "a", ft, 0), newNode(t, "ghost", ft, 0)
	ghost.t.Put("dns/ghost", []byte("10.0.0.9"))
	pushPull(a.t, ghost.t)
	if _, ok := a.t.Get("ghost", "dns/ghost"); !ok {
		t.Fatal("record not merged")
	}
	ft.add(11 * time.Second)
	a.t.sweep()
	if _, ok := a.t.Get("ghost", "dns/ghost"); ok {
		t.Fatal("record of an owner never seen alive kept past the grace period")
	}
}
