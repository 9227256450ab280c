package manager

import (
	"context"
	"log/slog"
	"runtime/debug"
	"sync"
)

// termTask is the one home of a kind of goroutine that a leader term owns
// (backups, deltas, verification): started when the instance takes the
// lease, cancelled when the term ends or the manager stops. A new term's
// goroutine is handed the previous one's done channel and waits for it
// before it acts, so two terms never run one kind at once. The zero value
// is ready; only the loop goroutine (and Close, after the loop ended) calls
// sync and stop.
type termTask[C any] struct {
	wg sync.WaitGroup

	mu  sync.Mutex // guards cur
	cur *termRun[C]
}

// termRun is one term's goroutine and its channels (C).
type termRun[C any] struct {
	term   int64
	cancel context.CancelFunc
	done   chan struct{}
	ch     C
}

// termBody is a term's goroutine; prev is the done channel of the term
// before (nil when none ran).
type termBody[C any] func(ctx context.Context, r *termRun[C], prev <-chan struct{})

// sync cancels the run of a term other than term (any run when not
// leading). When leading, start is true and nothing runs for term yet, it
// makes the run's channels (newCh), calls onStart (which resets what a
// term remembers) and then starts body under parent. A panic in body ends
// the goroutine with a log naming what; the next term starts a new one.
func (k *termTask[C]) sync(parent context.Context, leading bool, term int64, start bool, logger *slog.Logger, what string,
	newCh func() C, onStart func(), body termBody[C]) {
	k.mu.Lock()
	cur := k.cur
	var prev <-chan struct{}
	if cur != nil && (!leading || cur.term != term) {
		cur.cancel()
		prev = cur.done
		k.cur, cur = nil, nil
	}
	if !leading || cur != nil || !start || parent == nil {
		k.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(parent)
	r := &termRun[C]{term: term, cancel: cancel, done: make(chan struct{}), ch: newCh()}
	k.cur = r
	// Counted before the lock is released, so a stop from here on waits
	// for this goroutine.
	k.wg.Add(1)
	k.mu.Unlock()
	if onStart != nil {
		onStart()
	}
	go func() {
		defer k.wg.Done()
		defer close(r.done)
		defer func() {
			if p := recover(); p != nil {
				logger.Error(what+" goroutine panicked", "panic", p, "stack", string(debug.Stack()))
			}
		}()
		body(ctx, r, prev)
	}()
}

// current is the running term's goroutine, nil when none runs.
func (k *termTask[C]) current() *termRun[C] {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cur
}

// stop cancels the running goroutine and waits for every one started.
func (k *termTask[C]) stop() {
	k.mu.Lock()
	r := k.cur
	k.cur = nil
	k.mu.Unlock()
	if r != nil {
		r.cancel()
	}
	k.wg.Wait()
}

// waitPrev waits for the previous term's goroutine to end; false when ctx
// ended first.
func waitPrev(ctx context.Context, prev <-chan struct{}) bool {
	if prev == nil {
		return true
	}
	select {
	case <-prev:
		return true
	case <-ctx.Done():
		return false
	}
}
