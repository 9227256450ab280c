package gossipd

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kopsnode/agents/gossip/membership"
	"github.com/kopsnode/agents/pkg/store/file"
	"github.com/kopsnode/agents/pkg/testtools/netns"
)

// BenchmarkConvergence5Hosts starts five daemons in five network namespaces
// with the production (LAN) timings and reports the time from a record's write on one node until every node's
// /status shows it, polled every 5 ms.
func BenchmarkConvergence5Hosts(b *testing.B) {
	nw := netns.New(b, 5)
	storeDir := b.TempDir()
	st, err := file.New(storeDir, file.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := membership.WriteKeys(ctx, st, membership.KeysObject(testCluster), membership.KeySet{Primary: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}); err != nil {
		b.Fatal(err)
	}
	var seeds []string
	for _, h := range nw.Hosts {
		seeds = append(seeds, h.Addr.String()+":3996")
	}
	nodes := make([]*procNode, 5)
	for i := range nodes {
		nodes[i] = startProcNode(b, fmt.Sprintf("n%d", i), nw.Hosts[i], storeDir, seeds, 0, func(c *Config) { c.Fast = false })
	}
	eventually(b, 30*time.Second, "5 alive members everywhere", func() error {
		for _, n := range nodes {
			s, err := n.status(ctx)
			if err != nil {
				return err
			}
			for _, m := range nodes {
				if memberState(s, m.name) != "alive" {
					return fmt.Errorf("%s does not see %s", n.name, m.name)
				}
			}
		}
		return nil
	})
	const rounds = 5
	var total, worst time.Duration
	for i := 0; i < rounds; i++ {
		key := fmt.Sprintf("bench-%d-%d", b.N, i)
		start := time.Now()
		nodes[i%5].send(b, "put "+key+" v")
		pending := map[*procNode]bool{}
		for _, n := range nodes {
			pending[n] = true
		}
		for len(pending) > 0 {
			for n := range pending {
				if s, err := n.status(ctx); err == nil {
					if _, ok := findRecord(s, nodes[i%5].name, key); ok {
						delete(pending, n)
					}
				}
			}
			if time.Since(start) > 30*time.Second {
				b.Fatalf("%s did not reach %d nodes in 30 s", key, len(pending))
			}
			time.Sleep(5 * time.Millisecond)
		}
		d := time.Since(start)
		total += d
		worst = max(worst, d)
	}
	b.ReportMetric(total.Seconds()/rounds, "s-to-converge")
	b.ReportMetric(worst.Seconds(), "s-to-converge-max")
}
