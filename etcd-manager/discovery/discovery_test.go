package discovery

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/kopsnode/agents/pkg/store/file"
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
