package discovery

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/kopsnode/agents/pkg/store/file"
	"github.com/kopsnode/agents/pkg/store/storetest"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestStoreRegistryExpiry: records that keep being refreshed are live; a
// record unchanged for the TTL (its instance died) is ignored.
func TestStoreRegistryExpiry(t *testing.T) {
	ctx := context.Background()
	st, err := file.New(t.TempDir(), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Unix(0, 0)}
	const ttl = 10 * time.Second
	a := NewStoreRegistry(st, "c/peers/", ttl, clk.now)
	b := NewStoreRegistry(st, "c/peers/", ttl, clk.now)
	pa := Peer{ID: "a", ManagerAddr: "127.0.0.2:3994"}
	pb := Peer{ID: "b", ManagerAddr: "127.0.0.3:3994"}
	if err := a.Register(ctx, pa); err != nil {
		t.Fatal(err)
	}
	if err := b.Register(ctx, pb); err != nil {
		t.Fatal(err)
	}
	got, err := a.Peers(ctx)
	if err != nil || !reflect.DeepEqual(got, []Peer{pa, pb}) {
		t.Fatalf("Peers = %v, %v", got, err)
	}
	// a keeps refreshing, b does not.
	for i := 0; i < 4; i++ {
		clk.add(ttl / 3)
		if err := a.Register(ctx, pa); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Peers(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got, err = a.Peers(ctx)
	if err != nil || !reflect.DeepEqual(got, []Peer{pa}) {
		t.Fatalf("Peers after b went quiet = %v, %v; want only a", got, err)
	}
	// b comes back.
	if err := b.Register(ctx, pb); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.Peers(ctx); len(got) != 2 {
		t.Fatalf("Peers after b came back = %v", got)
	}
	if err := (Peer{ID: "", ManagerAddr: "x"}).Validate(); err == nil {
		t.Fatal("empty peer validated")
	}
}

// TestStoreRegistryRequests: on a tick of a twelfth of the TTL, an
// instance writes its record every quarter of the TTL (and at once when
// it changed), and reads another's only when it changed, while both stay
// live throughout.
func TestStoreRegistryRequests(t *testing.T) {
	ctx := context.Background()
	fs, err := file.New(t.TempDir(), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st := storetest.NewCounting(fs)
	clk := &clock{t: time.Unix(0, 0)}
	const ttl = 12 * time.Second
	a := NewStoreRegistry(st, "c/peers/", ttl, clk.now)
	b := NewStoreRegistry(st, "c/peers/", ttl, clk.now)
	pa := Peer{ID: "a", ManagerAddr: "127.0.0.2:3994"}
	pb := Peer{ID: "b", ManagerAddr: "127.0.0.3:3994"}
	const ticks = 48 // four TTLs
	for i := range ticks {
		if err := a.Register(ctx, pa); err != nil {
			t.Fatal(err)
		}
		if err := b.Register(ctx, pb); err != nil {
			t.Fatal(err)
		}
		got, err := a.Peers(ctx)
		if err != nil || !reflect.DeepEqual(got, []Peer{pa, pb}) {
			t.Fatalf("tick %d: Peers = %v, %v; want both live", i, got, err)
		}
		clk.add(ttl / 12)
	}
	n := st.Counts()
	puts, opens := n.Puts, n.Reads
	// Each of the two writes at ticks 0, 3, 6, ...: 16 times in 48 ticks;
	// a reads each record once per write.
	if puts != 2*ticks/3 || opens != 2*ticks/3 {
		t.Errorf("%d ticks: %d writes and %d reads, want %d and %d (one per quarter TTL each)", ticks, puts, opens, 2*ticks/3, 2*ticks/3)
	}
	// A changed record is written at once, and read at once.
	pa2 := Peer{ID: "a", ManagerAddr: "127.0.0.9:3994"}
	if err := a.Register(ctx, pa2); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Peers(ctx); err != nil || !reflect.DeepEqual(got, []Peer{pa2, pb}) {
		t.Fatalf("after a moved: Peers = %v, %v", got, err)
	}
	if p := st.Counts().Puts; p != puts+1 {
		t.Errorf("a changed record took %d writes, want 1", p-puts)
	}
	// b stops: after the TTL it is gone, although a keeps listing it.
	for range 13 {
		clk.add(ttl / 12)
		if err := a.Register(ctx, pa2); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := a.Peers(ctx); err != nil || !reflect.DeepEqual(got, []Peer{pa2}) {
		t.Fatalf("after b stopped: Peers = %v, %v; want only a", got, err)
	}
}

func TestMergeAndStatic(t *testing.T) {
	s1 := Static{{ID: "b", ManagerAddr: "127.0.0.3:1"}, {ID: "a", ManagerAddr: "127.0.0.2:1"}}
	s2 := Func(func(context.Context) ([]Peer, error) {
		return []Peer{{ID: "a", ManagerAddr: "10.0.0.1:1"}, {ID: "c", ManagerAddr: "127.0.0.4:1"}}, nil
	})
	got, err := Merge(s1, s2).Peers(context.Background())
	want := []Peer{{ID: "a", ManagerAddr: "127.0.0.2:1"}, {ID: "b", ManagerAddr: "127.0.0.3:1"}, {ID: "c", ManagerAddr: "127.0.0.4:1"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Merge = %v, %v; want %v", got, err, want)
	}
}
