package seeds

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/kopsnode/agents/pkg/store"
)

// Registry is the state store seed provider: each member writes its address
// to <cluster>/gossip/seeds/<node> with an expiry, refreshed while it runs;
// Seeds returns the addresses whose lease has not expired. It needs only
// read and write access to the cluster's store prefix, no cloud API.
type Registry struct {
	Store   store.Store
	Cluster string
	// Now is the clock for leases; time.Now when nil. Leases are compared
	// with wall time: a skewed clock only makes a seed look fresher or
	// staler, never corrupts state, and any live seed is enough to join.
	Now func() time.Time
}

// Lease is one registration.
type Lease struct {
	Node    string    `json:"node"`
	Addr    string    `json:"addr"`
	Expires time.Time `json:"expires"`
}

func (r Registry) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r Registry) prefix() string { return r.Cluster + "/gossip/seeds/" }

// Key returns the object key of node's registration.
func (r Registry) Key(node string) string { return r.prefix() + node }

// Register writes node's address with a lease of ttl.
func (r Registry) Register(ctx context.Context, node, addr string, ttl time.Duration) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("registering gossip seed %s: address %q: %w", node, addr, err)
	}
	if strings.Contains(node, "/") {
		return fmt.Errorf("registering gossip seed: node name %q contains a slash", node)
	}
	b, err := json.Marshal(Lease{Node: node, Addr: addr, Expires: r.now().Add(ttl).UTC()})
	if err != nil {
		return err
	}
	if _, err := r.Store.Put(ctx, r.Key(node), bytes.NewReader(b), store.Condition{}); err != nil {
		return fmt.Errorf("registering gossip seed %s: %w", node, err)
	}
	return nil
}

// Deregister removes node's registration.
func (r Registry) Deregister(ctx context.Context, node string) error {
	if err := r.Store.Delete(ctx, r.Key(node)); err != nil {
		return fmt.Errorf("deregistering gossip seed %s: %w", node, err)
	}
	return nil
}

// Seeds returns the addresses of unexpired registrations. Unreadable or
// malformed ones are skipped; an error is returned only when none could be
// listed.
func (r Registry) Seeds(ctx context.Context) ([]string, error) {
	infos, err := r.Store.List(ctx, r.prefix())
	if err != nil {
		return nil, fmt.Errorf("listing gossip seeds: %w", err)
	}
	now := r.now()
	var out []string
	for _, info := range infos {
		b, _, err := store.ReadAll(ctx, r.Store, info.Key)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			return nil, fmt.Errorf("reading gossip seed: %w", err)
		}
		var l Lease
		if err := json.Unmarshal(b, &l); err != nil {
			continue
		}
		if _, _, err := net.SplitHostPort(l.Addr); err != nil || !l.Expires.After(now) {
			continue
		}
		out = append(out, l.Addr)
	}
	return out, nil
}

// Registration keeps a node registered until Close.
type Registration struct {
	reg       Registry
	node      string
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// Keep registers node at addr now and refreshes the lease every ttl/3
// until Close, which deregisters it.
func (r Registry) Keep(ctx context.Context, node, addr string, ttl time.Duration, log *slog.Logger) (*Registration, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := r.Register(ctx, node, addr, ttl); err != nil {
		return nil, err
	}
	g := &Registration{reg: r, node: node, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(g.done)
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-g.stop:
				return
			case <-t.C:
				cctx, cancel := context.WithTimeout(context.Background(), ttl/3)
				if err := r.Register(cctx, node, addr, ttl); err != nil {
					log.Warn("refreshing the gossip seed lease", "err", err)
				}
				cancel()
			}
		}
	}()
	return g, nil
}

// Close stops refreshing and deregisters. Safe to call twice.
func (g *Registration) Close() error {
	var err error
	g.closeOnce.Do(func() {
		close(g.stop)
		<-g.done
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = g.reg.Deregister(ctx, g.node)
	})
	return err
}
