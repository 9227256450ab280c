package manager

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// TestTermTask: a term's goroutine starts once per term; a new term
// cancels the old one and its goroutine waits for the old one to end;
// losing the lease cancels without starting; start=false or a nil parent
// starts nothing; a panic is logged and ends only that goroutine; stop
// cancels and waits for all.
func TestTermTask(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	var k termTask[chan int]
	var mu sync.Mutex
	var events []string
	record := func(e string) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}
	release := make(chan struct{}) // holds term 1's goroutine after its cancel
	starts := 0
	body := func(ctx context.Context, r *termRun[chan int], prev <-chan struct{}) {
		if !waitPrev(ctx, prev) {
			record("gave up waiting")
			return
		}
		record("start")
		<-ctx.Done()
		if r.term == 1 {
			<-release
		}
		record("end")
	}
	parent := context.Background()
	sync1 := func(leading bool, term int64, start bool, p context.Context) {
		k.sync(p, leading, term, start, logger, "test", func() chan int { return make(chan int, 1) }, func() { starts++ }, body)
	}

	sync1(true, 1, true, parent)
	sync1(true, 1, true, parent) // same term: nothing new
	r1 := k.current()
	if r1 == nil || r1.term != 1 || starts != 1 {
		t.Fatalf("term 1: run %+v, %d starts", r1, starts)
	}
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(events) == 1 })

	// Term 2 cancels term 1, whose goroutine is still ending: term 2's
	// waits for it.
	sync1(true, 2, true, parent)
	r2 := k.current()
	if r2 == nil || r2.term != 2 || starts != 2 {
		t.Fatalf("term 2: run %+v, %d starts", r2, starts)
	}
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	if len(events) != 1 {
		t.Fatalf("term 2 started before term 1 ended: %v", events)
	}
	mu.Unlock()
	close(release)
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(events) == 3 })
	mu.Lock()
	if events[1] != "end" || events[2] != "start" {
		t.Fatalf("events %v, want term 1's end before term 2's start", events)
	}
	mu.Unlock()

	// Not leading: cancelled, nothing started. start=false or no parent:
	// nothing started either.
	sync1(false, 2, true, parent)
	sync1(true, 3, false, parent)
	sync1(true, 4, true, nil)
	if r := k.current(); r != nil || starts != 2 {
		t.Fatalf("after losing the lease: run %+v, %d starts", r, starts)
	}
	<-r2.done

	// A panicking body is logged and ends; the task goes on.
	k.sync(parent, true, 5, true, logger, "test", func() chan int { return nil }, nil,
		func(context.Context, *termRun[chan int], <-chan struct{}) { panic("boom") })
	<-k.current().done
	sync1(true, 6, true, parent)
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return events[len(events)-1] == "start" })
	k.stop()
	if r := k.current(); r != nil {
		t.Fatalf("after stop: %+v", r)
	}
	mu.Lock()
	defer mu.Unlock()
	if n := len(events); events[n-1] != "end" {
		t.Fatalf("stop returned before term 6 ended: %v", events)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
	}
}
