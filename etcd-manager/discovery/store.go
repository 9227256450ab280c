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
// store (<...>/control/peers/<id>). Each instance rewrites its record on
// every Register; a record is live while it keeps changing. Expiry is
// measured on the reader's own monotonic clock from the last change it
// saw, so clocks of different machines are never compared.
type StoreRegistry struct {
	st     store.Store
	prefix string
	ttl    time.Duration
	now    func() time.Time

	mu   sync.Mutex // guards seen and seq
	seen map[string]seenRecord
	seq  int64
}

type seenRecord struct {
	version store.Version
	since   time.Time
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

// Register writes or refreshes self's record.
func (r *StoreRegistry) Register(ctx context.Context, self Peer) error {
	if err := self.Validate(); err != nil {
		return fmt.Errorf("registering peer: %w", err)
	}
	r.mu.Lock()
	r.seq++
	rec := record{Peer: self, Seq: r.seq, Refreshed: r.now().UTC()}
	r.mu.Unlock()
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if _, err := r.st.Put(ctx, path.Join(r.prefix, self.ID), bytes.NewReader(b), store.Condition{}); err != nil {
		return fmt.Errorf("registering peer %s: %w", self.ID, err)
	}
	return nil
}

// Deregister removes self's record (on clean shutdown).
func (r *StoreRegistry) Deregister(ctx context.Context, id string) error {
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
		if !ok || s.version != info.Version {
			s = seenRecord{version: info.Version, since: now}
			r.seen[info.Key] = s
		}
		if now.Sub(s.since) >= r.ttl {
			continue
		}
		b, _, err := store.ReadAll(ctx, r.st, info.Key)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading peer record: %w", err)
		}
		var rec record
		if err := json.Unmarshal(b, &rec); err != nil || rec.Validate() != nil {
			continue
		}
		out = append(out, rec.Peer)
	}
	for k := range r.seen {
		if !present[k] {
			delete(r.seen, k)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
