package manager

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/discovery"
	"github.com/kopsnode/agents/etcd-manager/peer"
)

// Leadership runs on two clocks. The reconcile tick decides whether this
// instance wants the lease (leaseIntent, pure) and takes it; the keeper
// (keepLease) runs every LeaseDuration/4 on its own goroutine: the holder
// renews there, so a long tick never lets the lease lapse, and the others
// observe the lease there, so the candidate learns of an expiry within a
// quarter lease and wakes the loop at the moment the lease becomes free
// instead of at its next tick. gather does not wait again for a peer that
// did not answer last time, so a dead machine's timeout delays one tick,
// not every tick.

// election is the Manager's leadership state besides the lease itself.
type election struct {
	// wake makes the loop tick now (buffered, one pending wake).
	wake chan struct{}
	// candidate: the last tick found this instance should take the lease
	// when it is free.
	candidate atomic.Bool

	mu sync.Mutex
	// unreachable are the peers that did not answer the last gather.
	unreachable map[string]bool
}

func newElection() *election {
	return &election{wake: make(chan struct{}, 1), unreachable: map[string]bool{}}
}

func (e *election) wakeLoop() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// leaseIntent is the candidate rule. An instance that cannot reach a quorum
// of the spec's member count (itself included) must not lead: stepDown says
// why. Otherwise the holder keeps the lease, and the lowest ID among the
// reachable instances takes it when it is free; expiredHolder, the holder
// of a lease that expired unrenewed, is passed over even if it still
// answers its peers (it cannot reach the store, or is wedged), so that
// the next lowest takes over instead of nobody.
func leaseIntent(self string, infos map[string]peer.Info, memberCount int, holding bool, expiredHolder string) (want bool, stepDown string) {
	if q := control.Quorum(memberCount); len(infos) < q {
		return false, fmt.Sprintf("only %d of the %d peers needed for a quorum are reachable", len(infos), q)
	}
	if holding {
		return true, ""
	}
	candidate := ""
	for _, id := range sortedIDs(infos) {
		if id != expiredHolder {
			candidate = id
			break
		}
	}
	return candidate == self, ""
}

// keepLease renews the lease this instance holds, or observes it, every
// LeaseDuration/4 until ctx ends; a candidate sleeps only until the lease
// it saw becomes free and then wakes the loop.
func (m *Manager) keepLease(ctx context.Context) {
	every := m.cfg.LeaseDuration / 4
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		next := every
		was, _ := m.lease.IsLeader()
		rctx, cancel := context.WithTimeout(ctx, every)
		renewed, err := m.lease.Renew(rctx)
		cancel()
		switch {
		case err != nil:
			m.logger.Warn("renewing the leader lease", "err", err)
		case renewed:
		case was:
			m.logger.Warn("lost the leader lease: another instance took it")
			m.elect.wakeLoop()
		default:
			octx, cancel := context.WithTimeout(ctx, every)
			_, err := m.lease.Observe(octx)
			cancel()
			if err != nil {
				m.logger.Debug("observing the leader lease", "err", err)
				break
			}
			if !m.elect.candidate.Load() {
				break
			}
			if at, _, ok := m.lease.FreeAt(); ok {
				if until := at.Sub(m.now()); until <= 0 {
					m.elect.wakeLoop()
				} else if until < next {
					next = until
				}
			}
		}
		t.Reset(next)
	}
}

// expiredHolder returns the holder of the observed lease when it expired
// unrenewed, else "".
func (m *Manager) expiredHolder() string {
	at, holder, ok := m.lease.FreeAt()
	if !ok || holder == "" || m.now().Before(at) {
		return ""
	}
	return holder
}

// gather asks every discovered peer for its Info, in parallel; unreachable
// peers are left out. The local instance is always in. A peer that did not
// answer the last gather is asked again but not waited for: its answer
// counts if it comes while the others are still being asked, and otherwise
// makes the next gather wait for it again.
func (m *Manager) gather(ctx context.Context, peers []discovery.Peer) map[string]peer.Info {
	self, _ := m.Info(ctx)
	out := map[string]peer.Info{self.ID: self}
	var mu sync.Mutex // guards out and open
	open := true
	var wg sync.WaitGroup
	e := m.elect
	for _, p := range peers {
		if p.ID == self.ID {
			continue
		}
		e.mu.Lock()
		wait := !e.unreachable[p.ID]
		e.mu.Unlock()
		pctx := ctx
		if wait {
			wg.Add(1)
		} else {
			// Outlives this gather: the answer decides whether the next
			// one waits.
			pctx = context.WithoutCancel(ctx)
		}
		go func(p discovery.Peer) {
			if wait {
				defer wg.Done()
			}
			cctx, cancel := context.WithTimeout(pctx, m.cfg.PeerTimeout)
			defer cancel()
			info, err := m.client.Info(cctx, p.ManagerAddr)
			if err == nil && info.ID != p.ID {
				m.logger.Warn("peer answers with another identity", "expected", p.ID, "got", info.ID, "addr", p.ManagerAddr)
				return
			}
			e.mu.Lock()
			e.unreachable[p.ID] = err != nil
			e.mu.Unlock()
			if err != nil {
				m.logger.Debug("peer unreachable", "peer", p.ID, "addr", p.ManagerAddr, "err", err)
				return
			}
			mu.Lock()
			if open {
				out[p.ID] = info
			}
			mu.Unlock()
		}(p)
	}
	wg.Wait()
	mu.Lock()
	open = false
	res := make(map[string]peer.Info, len(out))
	for k, v := range out {
		res[k] = v
	}
	mu.Unlock()
	// Forget peers no longer discovered.
	known := map[string]bool{}
	for _, p := range peers {
		known[p.ID] = true
	}
	e.mu.Lock()
	for id := range e.unreachable {
		if !known[id] {
			delete(e.unreachable, id)
		}
	}
	e.mu.Unlock()
	return res
}

// tickTimeout bounds one reconcile tick: long enough for a gather, etcd's
// member list and a join (three peer timeouts), and at least a lease.
func (m *Manager) tickTimeout() time.Duration {
	return max(m.cfg.LeaseDuration, 6*m.cfg.PeerTimeout)
}
