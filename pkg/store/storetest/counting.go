package storetest

import (
	"context"
	"io"
	"sync/atomic"

	"github.com/kopsnode/agents/pkg/store"
)

// Counting wraps a store and counts the requests that reach it, for tests
// and benchmarks that hold a component to a request budget. Safe for
// concurrent use.
type Counting struct {
	store.Store

	key                                  atomic.Pointer[string]
	reads, puts, lists, deletes, keyReqs atomic.Int64
}

// Counts is what a Counting store has seen so far.
type Counts struct {
	Reads   int64 // Open and Stat
	Puts    int64
	Lists   int64
	Deletes int64
	// OnKey is the reads, puts and deletes of the key given to CountKey.
	OnKey int64
}

// NewCounting counts the requests made to s.
func NewCounting(s store.Store) *Counting { return &Counting{Store: s} }

// CountKey makes OnKey count the requests on key (from now on).
func (c *Counting) CountKey(key string) { c.key.Store(&key) }

// Counts returns the counts so far.
func (c *Counting) Counts() Counts {
	return Counts{Reads: c.reads.Load(), Puts: c.puts.Load(), Lists: c.lists.Load(), Deletes: c.deletes.Load(), OnKey: c.keyReqs.Load()}
}

func (c *Counting) onKey(key string) {
	if k := c.key.Load(); k != nil && *k == key {
		c.keyReqs.Add(1)
	}
}

func (c *Counting) Open(ctx context.Context, key string) (io.ReadCloser, store.Info, error) {
	c.reads.Add(1)
	c.onKey(key)
	return c.Store.Open(ctx, key)
}

func (c *Counting) Stat(ctx context.Context, key string) (store.Info, error) {
	c.reads.Add(1)
	c.onKey(key)
	return c.Store.Stat(ctx, key)
}

func (c *Counting) Put(ctx context.Context, key string, r io.Reader, cond store.Condition) (store.Info, error) {
	c.puts.Add(1)
	c.onKey(key)
	return c.Store.Put(ctx, key, r, cond)
}

func (c *Counting) List(ctx context.Context, prefix string) ([]store.Info, error) {
	c.lists.Add(1)
	return c.Store.List(ctx, prefix)
}

func (c *Counting) Delete(ctx context.Context, key string) error {
	c.deletes.Add(1)
	c.onKey(key)
	return c.Store.Delete(ctx, key)
}
