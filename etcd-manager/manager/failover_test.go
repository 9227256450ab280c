package manager_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kopsnode/agents/etcd-manager/harness"
	"github.com/kopsnode/agents/etcd-manager/manager"
)

// TestFailoverWithDefaults: with the production tick, lease and peer
// timeout, the leader's machine dies the way a real one does (its address
// drops every packet, then its manager and etcd are killed); another
// instance leads, under a higher term, and the two survivors take a write.
// The wait is bounded by the election's own bound (a survivor takes over
// one lease after it last saw the lease renewed, plus ticks), with room
// for a loaded machine; the 10 s target itself is a figure of
// BenchmarkFailover, not a timed assertion. Needs root (iptables).
func TestFailoverWithDefaults(t *testing.T) {
	t.Parallel()
	d := manager.DefaultConfig("test.k8s.local", "main")
	target := 3 * d.LeaseDuration
	c := harness.New(t, harness.Options{IPPrefix: "127.44.110", Versions: []string{version},
		Tick: d.Tick, LeaseDuration: d.LeaseDuration,
		Mutate: func(cfg *manager.Config) { cfg.PeerTimeout = d.PeerTimeout }})
	c.SetSpec(3, version)
	ids := startN(c, 3)
	c.WaitMembers(converge, ids...)
	old := c.WaitLeader(converge)
	oldSt, err := c.Instance(old).M.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var rest []string
	for _, id := range ids {
		if id != old {
			rest = append(rest, id)
		}
	}
	cl := c.Client(rest...)
	heal := c.Partition(old)
	defer heal()
	start := time.Now()
	c.Kill(old)
	var next string
	c.Eventually(target, "a new leader within "+target.String(), func() error {
		ls := c.Leaders()
		if len(ls) != 1 || ls[0] == old {
			return fmt.Errorf("leaders %v", ls)
		}
		next = ls[0]
		return nil
	})
	elected := time.Since(start)
	c.Eventually(target-elected, "a write within "+target.String(), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := cl.Put(ctx, "/failover", next)
		return err
	})
	t.Logf("leader %s's machine died; %s leads after %.1f s, write accepted after %.1f s", old, next, elected.Seconds(), time.Since(start).Seconds())
	st, err := c.Instance(next).M.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.LeaderTerm <= oldSt.LeaderTerm {
		t.Errorf("new leader's term %d is not above the old one's %d", st.LeaderTerm, oldSt.LeaderTerm)
	}
}
