// Package leader implements the leadership lease of etcd-manager in the state
// store. The lease is one object updated only by compare-and-swap; its term
// grows by one on every change of holder. Expiry never compares wall clocks
// of different machines: an observer counts a lease as expired when the
// object has not changed for a whole lease duration on its own monotonic
// clock, while the holder stops calling itself leader half a lease after it
// started its last successful renewal.
//
// The bound: a renewal that starts at S is written at some W >= S and first
// seen by an observer at O >= W; the holder acts only before S + D/2, the
// observer takes over no sooner than O + D. Two leaders therefore never
// overlap as long as, during those D/2 (3 s with the default 6 s lease), the
// machines' clocks run within a factor of two of each other and an action
// the holder began before S + D/2 has finished (callers bound their actions
// with timeouts shorter than D/2). Renew is a single conditional write, so
// the holder can renew every D/4 (two tries inside its D/2) cheaply. The
// callers' actions: etcd membership calls are bounded by the manager's peer
// timeout (default 2 s, under D/2); peer commands carry the term and a peer
// refuses a term older than one it obeyed; store writes that must happen
// once are create-if-absent.
package leader

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/kopsnode/agents/pkg/store"
)

// Record is the lease object.
type Record struct {
	// Holder is the instance ID holding the lease; empty when released.
	Holder string `json:"holder"`
	// Term grows by one whenever the holder changes.
	Term int64 `json:"term"`
	// Renewed is informational (the holder's wall clock).
	Renewed time.Time `json:"renewed"`
}

// Clock is the time source; tests may pass a fake.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Lease is one instance's view of, and hold on, the leadership lease.
type Lease struct {
	st       store.Store
	key      string
	id       string
	duration time.Duration
	clock    Clock

	// opMu serialises the store operations (Acquire, Renew, Observe,
	// Release), so a renewal in one goroutine and an acquisition in
	// another never race each other's compare-and-swap.
	opMu sync.Mutex

	mu sync.Mutex // guards the fields below
	// observation of the object, for expiry.
	seenVersion store.Version
	seenAbsent  bool
	seenRecord  Record
	seenSince   time.Time
	observed    bool
	// our hold.
	heldVersion store.Version
	heldTerm    int64
	validUntil  time.Time
	// everHeld: this handle held the lease once (so a record under our ID
	// with another version is a takeover by someone else, not a restart).
	everHeld bool
}

// New returns a lease handle for instance id at key. clock may be nil.
func New(st store.Store, key, id string, duration time.Duration, clock Clock) *Lease {
	if clock == nil {
		clock = realClock{}
	}
	return &Lease{st: st, key: key, id: id, duration: duration, clock: clock}
}

// IsLeader reports whether this instance holds a valid lease, and its term.
func (l *Lease) IsLeader() (bool, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.heldVersion != "" && l.clock.Now().Before(l.validUntil) {
		return true, l.heldTerm
	}
	return false, 0
}

// Current returns the last observed record (holder may be stale).
func (l *Lease) Current() Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seenRecord
}

func (l *Lease) read(ctx context.Context) (Record, store.Version, bool, error) {
	b, info, err := store.ReadAll(ctx, l.st, l.key)
	if errors.Is(err, store.ErrNotFound) {
		return Record{}, "", false, nil
	}
	if err != nil {
		return Record{}, "", false, fmt.Errorf("reading leader lease: %w", err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		// A corrupt lease is treated as a lease held by nobody: it is
		// replaced by compare-and-swap on its version.
		return Record{}, info.Version, true, nil
	}
	return r, info.Version, true, nil
}

// observeLocked records what was read and reports whether the lease is free
// to take: absent, released, or unchanged for a whole lease duration.
func (l *Lease) observeLocked(r Record, v store.Version, exists bool, now time.Time) bool {
	if !l.observed || v != l.seenVersion || exists == l.seenAbsent {
		l.seenVersion, l.seenAbsent, l.seenRecord, l.seenSince, l.observed = v, !exists, r, now, true
	}
	if !exists || r.Holder == "" {
		return true
	}
	return now.Sub(l.seenSince) >= l.duration
}

// FreeAt returns when, on this instance's clock, the lease last observed
// becomes free to take if its holder does not renew it, and that holder.
// ok is false before the first observation and while this instance holds
// the lease. A free (absent or released) lease is free at once.
func (l *Lease) FreeAt() (at time.Time, holder string, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.observed || (l.heldVersion != "" && l.seenVersion == l.heldVersion) {
		return time.Time{}, "", false
	}
	if l.seenAbsent || l.seenRecord.Holder == "" {
		return l.seenSince, "", true
	}
	return l.seenSince.Add(l.duration), l.seenRecord.Holder, true
}

// Observe reads the lease to track its expiry without trying to take it.
// Instances that are not candidates call it on every tick.
func (l *Lease) Observe(ctx context.Context) (Record, error) {
	l.opMu.Lock()
	defer l.opMu.Unlock()
	r, v, exists, err := l.read(ctx)
	if err != nil {
		return Record{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.observeLocked(r, v, exists, l.clock.Now())
	if l.heldVersion != "" && v != l.heldVersion {
		l.heldVersion = ""
	}
	return r, nil
}

// Acquire takes or renews the lease. It returns whether this instance holds
// it afterwards. A lost compare-and-swap is not an error.
func (l *Lease) Acquire(ctx context.Context) (bool, int64, error) {
	l.opMu.Lock()
	defer l.opMu.Unlock()
	start := l.clock.Now()
	r, v, exists, err := l.read(ctx)
	if err != nil {
		l.drop()
		return false, 0, err
	}
	l.mu.Lock()
	free := l.observeLocked(r, v, exists, start)
	mine := exists && r.Holder == l.id && v == l.heldVersion
	if exists && r.Holder == l.id && !mine && !l.everHeld {
		// Held under our ID by an earlier run of this instance (IDs are
		// unique per instance): that run is gone, take over at once with a
		// new term rather than wait for expiry.
		free = true
	}
	l.mu.Unlock()
	if !free && !mine {
		l.drop()
		return false, 0, nil
	}
	next := Record{Holder: l.id, Term: r.Term, Renewed: start.UTC()}
	if !mine || r.Holder != l.id {
		next.Term = r.Term + 1
	}
	cond := store.Condition{IfAbsent: true}
	if exists {
		cond = store.Condition{IfVersion: v}
	}
	b, err := json.Marshal(next)
	if err != nil {
		return false, 0, err
	}
	info, err := l.st.Put(ctx, l.key, bytes.NewReader(b), cond)
	if err != nil {
		l.drop()
		if errors.Is(err, store.ErrPrecondition) {
			return false, 0, nil
		}
		return false, 0, fmt.Errorf("writing leader lease: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.heldVersion, l.heldTerm, l.everHeld = info.Version, next.Term, true
	l.validUntil = start.Add(l.duration / 2)
	l.seenVersion, l.seenAbsent, l.seenRecord, l.seenSince, l.observed = info.Version, false, next, l.clock.Now(), true
	return true, next.Term, nil
}

// Renew extends a lease this instance holds with one compare-and-swap on
// the version it wrote last (no read). It returns false, without error,
// when this instance holds no lease or another instance took it. A store
// error keeps the hold: its validity runs out on its own unless a later
// renewal succeeds first.
func (l *Lease) Renew(ctx context.Context) (bool, error) {
	l.opMu.Lock()
	defer l.opMu.Unlock()
	l.mu.Lock()
	v, term := l.heldVersion, l.heldTerm
	l.mu.Unlock()
	if v == "" {
		return false, nil
	}
	start := l.clock.Now()
	next := Record{Holder: l.id, Term: term, Renewed: start.UTC()}
	b, err := json.Marshal(next)
	if err != nil {
		return false, err
	}
	info, err := l.st.Put(ctx, l.key, bytes.NewReader(b), store.Condition{IfVersion: v})
	if errors.Is(err, store.ErrPrecondition) {
		l.drop()
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("renewing leader lease: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.heldVersion, l.validUntil = info.Version, start.Add(l.duration/2)
	l.seenVersion, l.seenAbsent, l.seenRecord, l.seenSince, l.observed = info.Version, false, next, l.clock.Now(), true
	return true, nil
}

func (l *Lease) drop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.heldVersion, l.heldTerm = "", 0
}

// Release gives the lease up if this instance holds it, so another instance
// need not wait for expiry. Errors are returned but the local hold is gone.
func (l *Lease) Release(ctx context.Context) error {
	l.opMu.Lock()
	defer l.opMu.Unlock()
	l.mu.Lock()
	v, term := l.heldVersion, l.heldTerm
	l.heldVersion, l.heldTerm = "", 0
	l.mu.Unlock()
	if v == "" {
		return nil
	}
	b, _ := json.Marshal(Record{Holder: "", Term: term, Renewed: l.clock.Now().UTC()})
	if _, err := l.st.Put(ctx, l.key, bytes.NewReader(b), store.Condition{IfVersion: v}); err != nil && !errors.Is(err, store.ErrPrecondition) {
		return fmt.Errorf("releasing leader lease: %w", err)
	}
	return nil
}
