// Package discovery finds the etcd-manager instances of one etcd cluster.
// Backends are small: a static list, a registry in the state store with
// records that expire unless refreshed, and Func, the hook through which
// gossip or cloud volumes can supply peers later.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
)

// Peer is one etcd-manager instance.
type Peer struct {
	// ID is the instance's identity (its etcd member name).
	ID string `json:"id"`
	// ManagerAddr is host:port of its peer protocol endpoint.
	ManagerAddr string `json:"managerAddr"`
}

// Validate checks the record.
func (p Peer) Validate() error {
	if p.ID == "" {
		return errors.New("id is empty")
	}
	if _, _, err := net.SplitHostPort(p.ManagerAddr); err != nil {
		return fmt.Errorf("managerAddr %q: %w", p.ManagerAddr, err)
	}
	return nil
}

// Discovery returns the current peers, the local instance included or not.
type Discovery interface {
	Peers(ctx context.Context) ([]Peer, error)
}

// Registrar is implemented by backends that need the local instance to
// announce itself; the manager calls Register on every tick.
type Registrar interface {
	Register(ctx context.Context, self Peer) error
}

// Static is a fixed list of peers.
type Static []Peer

// Peers returns the list.
func (s Static) Peers(context.Context) ([]Peer, error) { return append([]Peer(nil), s...), nil }

// Func adapts a function (gossip, cloud volumes) to Discovery.
type Func func(ctx context.Context) ([]Peer, error)

// Peers calls f.
func (f Func) Peers(ctx context.Context) ([]Peer, error) { return f(ctx) }

// Merge returns the union of several backends' peers by ID; the first
// backend naming an ID wins. A backend's error fails the call only when
// every backend fails.
func Merge(ds ...Discovery) Discovery {
	return Func(func(ctx context.Context) ([]Peer, error) {
		seen := map[string]bool{}
		var out []Peer
		var errs []error
		for _, d := range ds {
			ps, err := d.Peers(ctx)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, p := range ps {
				if !seen[p.ID] {
					seen[p.ID] = true
					out = append(out, p)
				}
			}
		}
		if len(errs) == len(ds) && len(ds) > 0 {
			return nil, errors.Join(errs...)
		}
		sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
		return out, nil
	})
}
