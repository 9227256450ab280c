package leader

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/kopsnode/agents/pkg/store/file"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestLeaseExclusiveExpiryAndTerm(t *testing.T) {
	ctx := context.Background()
	st, err := file.New(t.TempDir(), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{t: time.Unix(1000, 0)}
	const d = 2 * time.Second
	a := New(st, "lease", "a", d, clk)
	b := New(st, "lease", "b", d, clk)

	ok, term, err := a.Acquire(ctx)
	if err != nil || !ok || term != 1 {
		t.Fatalf("a.Acquire = %v, %d, %v; want true, 1", ok, term, err)
	}
	// b sees a live lease and cannot take it.
	if ok, _, err := b.Acquire(ctx); err != nil || ok {
		t.Fatalf("b.Acquire while a holds = %v, %v", ok, err)
	}
	// a renews: same term; b's observation restarts because the object changed.
	clk.Advance(d / 4)
	if ok, term, err := a.Acquire(ctx); err != nil || !ok || term != 1 {
		t.Fatalf("a renew = %v, %d, %v", ok, term, err)
	}
	if _, err := b.Observe(ctx); err != nil {
		t.Fatal(err)
	}
	clk.Advance(d - time.Millisecond)
	if ok, _, _ := b.Acquire(ctx); ok {
		t.Fatal("b took the lease before it was unchanged for a whole duration")
	}
	// a stops renewing: after d/2 it no longer calls itself leader...
	if ok, _ := a.IsLeader(); ok {
		t.Fatal("a still leader more than half a lease after its last renewal")
	}
	// ...and after d unchanged, b takes over with a higher term.
	clk.Advance(2 * time.Millisecond)
	ok, term, err = b.Acquire(ctx)
	if err != nil || !ok || term != 2 {
		t.Fatalf("b.Acquire after expiry = %v, %d, %v; want true, 2", ok, term, err)
	}
	// a's renewal now fails by compare-and-swap.
	if ok, _, err := a.Acquire(ctx); err != nil || ok {
		t.Fatalf("a.Acquire after losing = %v, %v", ok, err)
	}
	// Release lets a take it at once.
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, term, err := a.Acquire(ctx); err != nil || !ok || term != 3 {
		t.Fatalf("a.Acquire after release = %v, %d, %v; want true, 3", ok, term, err)
	}
	// a restarts (a new handle, same ID): it takes its own lease at once,
	// with a new term.
	a2 := New(st, "lease", "a", d, clk)
	if ok, term, err := a2.Acquire(ctx); err != nil || !ok || term != 4 {
		t.Fatalf("restarted a.Acquire = %v, %d, %v; want true, 4", ok, term, err)
	}
	if ok, _, _ := a.Acquire(ctx); ok {
		t.Fatal("the old handle still renews after the restart took over")
	}
}

// TestLeaseConcurrentAcquire: of many instances racing for a free lease,
// exactly one wins.
func TestLeaseConcurrentAcquire(t *testing.T) {
	ctx := context.Background()
	st, err := file.New(t.TempDir(), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	winners := 0
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			l := New(st, "lease", string(rune('a'+i)), time.Minute, nil)
			ok, _, err := l.Acquire(ctx)
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				winners++
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	if winners != 1 {
		t.Fatalf("%d instances hold the lease", winners)
	}
}
