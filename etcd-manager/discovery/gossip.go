package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/kopsnode/agents/gossip/localapi"
)

// Gossip finds peers through the cluster's gossip records: each instance
// publishes its Peer record through the gossip daemon of its own node
// (protokube gossip, package gossip/localapi) under a lease it refreshes on
// every Register, and reads every node's records back. It needs nothing
// from the state store, so peers are found while the store registry is
// stale or unreachable; a record whose node left gossip is ignored.
type Gossip struct {
	// Client reaches the local gossip daemon.
	Client localapi.Client
	// EtcdCluster names the etcd cluster ("main", "events"): one gossip
	// cluster carries the records of every etcd cluster of the Kubernetes
	// cluster.
	EtcdCluster string
	// Lease is how long a record lives unless published again; a few
	// reconcile ticks.
	Lease time.Duration
}

// GossipPrefix is the key prefix of an etcd cluster's peer records.
func GossipPrefix(etcdCluster string) string {
	return localapi.PublishPrefix + "etcd-manager/" + etcdCluster + "/"
}

// Register publishes (or refreshes) self's record.
func (g Gossip) Register(ctx context.Context, self Peer) error {
	if err := self.Validate(); err != nil {
		return fmt.Errorf("registering peer: %w", err)
	}
	v, err := json.Marshal(self)
	if err != nil {
		return err
	}
	if err := g.Client.Publish(ctx, GossipPrefix(g.EtcdCluster)+self.ID, v, g.Lease); err != nil {
		return fmt.Errorf("publishing %s in gossip: %w", self.ID, err)
	}
	return nil
}

// Peers returns the peers of live gossip members, one per ID. Two live
// records naming one ID (which slot claims prevent) resolve to the owner
// that sorts first, so every reader picks the same.
func (g Gossip) Peers(ctx context.Context) ([]Peer, error) {
	prefix := GossipPrefix(g.EtcdCluster)
	entries, err := g.Client.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("listing peers in gossip: %w", err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Owner < entries[j].Owner })
	byID := map[string]Peer{}
	var errs []error
	for _, e := range entries {
		if !e.OwnerAlive {
			continue
		}
		var p Peer
		if err := json.Unmarshal(e.Value, &p); err != nil {
			errs = append(errs, fmt.Errorf("gossip record %s of %s: %w", e.Key, e.Owner, err))
			continue
		}
		if err := p.Validate(); err != nil || p.ID != strings.TrimPrefix(e.Key, prefix) {
			errs = append(errs, fmt.Errorf("gossip record %s of %s: not a valid peer for its key: %+v", e.Key, e.Owner, p))
			continue
		}
		if _, ok := byID[p.ID]; !ok {
			byID[p.ID] = p
		}
	}
	out := make([]Peer, 0, len(byID))
	for _, p := range byID {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	if len(out) == 0 && len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// Union combines backends: Peers is the union by ID, the first backend
// naming an ID winning (so list the one with live addresses first, gossip
// before the store registry), and an error only when every backend fails;
// Register registers with every backend that takes registrations and
// reports each one that failed (the others are registered all the same).
type Union []Discovery

// Peers returns the union of the backends' peers.
func (u Union) Peers(ctx context.Context) ([]Peer, error) {
	return Merge(u...).Peers(ctx)
}

// Register registers self with every Registrar among the backends.
func (u Union) Register(ctx context.Context, self Peer) error {
	var errs []error
	for _, d := range u {
		if r, ok := d.(Registrar); ok {
			if err := r.Register(ctx, self); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
