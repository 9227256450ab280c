package discovery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"sync"
	"time"

	"github.com/kopsnode/agents/pkg/store"
)

// StoreRegistry keeps one record per instance under a prefix of the state
// store (<...>/control/peers/<id>). Each instance rewrites its record when
// it changed and otherwise every quarter of the TTL (Register runs every
// tick; a write per tick was most of the manager's store requests); a
// record is live while it keeps changing. Expiry is measured on the
// reader's own monotonic clock from the last change it saw, so clocks of
// different machines are never compared. A reader reads a record only
// when its version changed.
type StoreRegistry struct {
	st     store.Store
	prefix string
	ttl    time.Duration
	now    func() time.Time

	mu      sync.Mutex // guards the fields below
	seen    map[string]seenRecord
	seq     int64
	written Peer      // the record last written
	wroteAt time.Time // when that write began; zero: none yet
}

type seenRecord struct {
	version store.Version
	since   time.Time
	// peer is the record at version; ok is false when it did not parse.
	peer Peer
	ok   bool
}

type record struct {
	Peer
	// Seq changes on every refresh so the object's version changes.
	Seq       int64     `json:"seq"`
	Refreshed time.Time `json:"refreshed"`
}

// NewStoreRegistry returns a registry under prefix (ending in "/"). A record
// unchanged for ttl is ignored. now may be nil.
func NewStoreRegistry(st store.Store, prefix string, ttl time.Duration, now func() time.Time) *StoreRegistry {
	if now == nil {
		now = time.Now
	}
	return &StoreRegistry{st: st, prefix: prefix, ttl: ttl, now: now, seen: map[string]seenRecord{}}
}

// Register writes self's record when it changed or a quarter of the TTL
// after the last write began, so readers see it change well within the
// TTL; otherwise it does nothing.
func (r *StoreRegistry) Register(ctx context.Context, self Peer) error {
	if err := self.Validate(); err != nil {
		return fmt.Errorf("registering peer: %w", err)
	}
	now := r.now()
	r.mu.Lock()
	if self == r.written && !r.wroteAt.IsZero() && now.Sub(r.wroteAt) < r.ttl/4 {
		r.mu.Unlock()
		return nil
	}
	r.seq++
	rec := record{Peer: self, Seq: r.seq, Refreshed: now.UTC()}
	r.written, r.wroteAt = Peer{}, time.Time{} // until this write succeeds
	r.mu.Unlock()
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if _, err := r.st.Put(ctx, path.Join(r.prefix, self.ID), bytes.NewReader(b), store.Condition{}); err != nil {
		return fmt.Errorf("registering peer %s: %w", self.ID, err)
	}
	r.mu.Lock()
	r.written, r.wroteAt = self, now
	r.mu.Unlock()
	return nil
}

// Deregister removes self's record (on clean shutdown); a later Register
// writes it again at once.
func (r *StoreRegistry) Deregister(ctx context.Context, id string) error {
	r.mu.Lock()
	r.written, r.wroteAt = Peer{}, time.Time{}
	r.mu.Unlock()
	return r.st.Delete(ctx, path.Join(r.prefix, id))
}

// Peers returns the live records.
func (r *StoreRegistry) Peers(ctx context.Context) ([]Peer, error) {
	infos, err := r.st.List(ctx, r.prefix)
	if err != nil {
		return nil, fmt.Errorf("listing peer registry: %w", err)
	}
	now := r.now()
	var out []Peer
	r.mu.Lock()
	defer r.mu.Unlock()
	present := map[string]bool{}
	for _, info := range infos {
		present[info.Key] = true
		s, ok := r.seen[info.Key]
		if ok && s.version == info.Version {
			// Unchanged: what was read at this version still holds.
			if s.ok && now.Sub(s.since) < r.ttl {
				out = append(out, s.peer)
			}
			continue
		}
		s = seenRecord{version: info.Version, since: now}
		// A record rewritten since the listing is newer than the version
		// it is kept under; the next listing shows the new version and it
		// is read again.
		b, _, err := store.ReadAll(ctx, r.st, info.Key)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading peer record: %w", err)
		}
		var rec record
		if err := json.Unmarshal(b, &rec); err == nil && rec.Validate() == nil {
			s.peer, s.ok = rec.Peer, true
			out = append(out, rec.Peer)
		}
		r.seen[info.Key] = s
	}
	for k := range r.seen {
		if !present[k] {
			delete(r.seen, k)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
