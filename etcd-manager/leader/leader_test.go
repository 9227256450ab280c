package leader

import (
	"context"
	"fmt"
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

// TestLeaseRenewAndFreeAt: Renew extends a held lease with one conditional
// write and fails once another instance took it; FreeAt tells an observer
// when the lease it saw becomes free, counted from its own observation.
func TestLeaseRenewAndFreeAt(t *testing.T) {
	ctx := context.Background()
	st, err := file.New(t.TempDir(), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{t: time.Unix(1000, 0)}
	const d = 6 * time.Second
	a := New(st, "lease", "a", d, clk)
	b := New(st, "lease", "b", d, clk)

	if ok, err := a.Renew(ctx); err != nil || ok {
		t.Fatalf("Renew without a hold = %v, %v; want false", ok, err)
	}
	if _, _, ok := b.FreeAt(); ok {
		t.Fatal("FreeAt before any observation")
	}
	if ok, _, err := a.Acquire(ctx); err != nil || !ok {
		t.Fatalf("a.Acquire = %v, %v", ok, err)
	}
	if _, _, ok := a.FreeAt(); ok {
		t.Fatal("the holder's own lease reported as becoming free")
	}
	if _, err := b.Observe(ctx); err != nil {
		t.Fatal(err)
	}
	at, holder, ok := b.FreeAt()
	if !ok || holder != "a" || !at.Equal(clk.Now().Add(d)) {
		t.Fatalf("b.FreeAt = %v, %q, %v; want %v, a", at, holder, ok, clk.Now().Add(d))
	}
	// Renewals keep a leader past half a lease and move b's FreeAt on.
	for i := 0; i < 4; i++ {
		clk.Advance(d / 4)
		if ok, err := a.Renew(ctx); err != nil || !ok {
			t.Fatalf("renewal %d = %v, %v", i, ok, err)
		}
		if ok, term := a.IsLeader(); !ok || term != 1 {
			t.Fatalf("a after renewal %d: leader %v term %d", i, ok, term)
		}
		if _, err := b.Observe(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if at2, _, _ := b.FreeAt(); !at2.Equal(clk.Now().Add(d)) {
		t.Fatalf("b.FreeAt after renewals = %v, want %v", at2, clk.Now().Add(d))
	}
	if ok, _, _ := b.Acquire(ctx); ok {
		t.Fatal("b took a renewed lease")
	}
	// a stops renewing: it stops leading after d/2, b takes over at d.
	clk.Advance(d / 2)
	if ok, _ := a.IsLeader(); ok {
		t.Fatal("a still leader half a lease after its last renewal")
	}
	clk.Advance(d / 2)
	if ok, term, err := b.Acquire(ctx); err != nil || !ok || term != 2 {
		t.Fatalf("b.Acquire at FreeAt = %v, %d, %v; want true, 2", ok, term, err)
	}
	// a's renewal now loses the compare-and-swap and drops the hold.
	if ok, err := a.Renew(ctx); err != nil || ok {
		t.Fatalf("a.Renew after the takeover = %v, %v; want false", ok, err)
	}
	if ok, _ := a.IsLeader(); ok {
		t.Fatal("a leader after losing its renewal")
	}
	// A released lease is free at once.
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Observe(ctx); err != nil {
		t.Fatal(err)
	}
	if at, holder, ok := a.FreeAt(); !ok || holder != "" || at.After(clk.Now()) {
		t.Fatalf("a.FreeAt after release = %v, %q, %v; want now", at, holder, ok)
	}
}

// TestLeaseRenewConcurrentWithAcquire: a renewal goroutine and a tick's
// Acquire of the same handle never make it lose its own lease.
func TestLeaseRenewConcurrentWithAcquire(t *testing.T) {
	ctx := context.Background()
	st, err := file.New(t.TempDir(), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := New(st, "lease", "a", time.Minute, nil)
	if ok, _, err := a.Acquire(ctx); err != nil || !ok {
		t.Fatalf("a.Acquire = %v, %v", ok, err)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 200)
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				var ok bool
				var err error
				if g == 0 {
					ok, err = a.Renew(ctx)
				} else {
					ok, _, err = a.Acquire(ctx)
				}
				if err != nil || !ok {
					errs <- fmt.Sprintf("goroutine %d call %d: %v, %v", g, i, ok, err)
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
