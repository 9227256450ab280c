package manager_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/kopsnode/agents/etcd-manager/harness"
	"github.com/kopsnode/agents/etcd-manager/manager"
	"github.com/kopsnode/agents/pkg/store/file"
	"github.com/kopsnode/agents/pkg/store/storetest"
)

// BenchmarkFailover measures, with the production defaults of tick, lease
// and peer timeout (manager.DefaultConfig: 2 s, 6 s, 2 s), the time from
// the leader's machine dying until another instance leads
// (s-to-new-leader/op) and until the two remaining members accept a write
// (s-to-write/op). The machine dies as a real one does: every packet to
// and from its address is dropped first (its peers wait out their timeout
// rather than being refused), then its manager and etcd are killed.
// Target: a new leader within 10 s. Before the first kill it also counts
// the state-store requests of the three instances in a steady cluster
// (store-*/s, lease-req/s: those on the leader lease). Needs root
// (iptables). Run with
// go test ./etcd-manager/manager -run '^$' -bench Failover -benchtime 3x
func BenchmarkFailover(b *testing.B) {
	d := manager.DefaultConfig("test.k8s.local", "main")
	fs, err := file.New(filepath.Join(b.TempDir(), "store"), file.Options{CreateRoot: true})
	if err != nil {
		b.Fatal(err)
	}
	st := storetest.NewCounting(fs)
	c := harness.New(b, harness.Options{IPPrefix: "127.44.20", Versions: []string{version}, Store: st,
		Tick: d.Tick, LeaseDuration: d.LeaseDuration,
		Mutate: func(cfg *manager.Config) { cfg.PeerTimeout = d.PeerTimeout }})
	c.SetSpec(3, version)
	var ids []string
	for i := 1; i <= 3; i++ {
		ids = append(ids, c.Start(i).ID)
	}
	c.WaitMembers(converge, ids...)
	st.CountKey(c.Layout.LeaderKey())
	// The steady rate: after the cluster formed, over ten ticks.
	time.Sleep(2 * d.Tick)
	before, window := st.Counts(), 10*d.Tick
	time.Sleep(window)
	after := st.Counts()
	per := func(a, b int64) float64 { return float64(a-b) / window.Seconds() }
	reads, puts, lists := per(after.Reads, before.Reads), per(after.Puts, before.Puts), per(after.Lists, before.Lists)
	deletes, onLease := per(after.Deletes, before.Deletes), per(after.OnKey, before.OnKey)
	b.Logf("state store, 3 instances, steady: %.2f reads/s, %.2f puts/s, %.2f lists/s, %.2f deletes/s; %.2f requests/s on the lease", reads, puts, lists, deletes, onLease)
	var total, worst, elect, worstElect time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		old := c.WaitLeader(converge)
		var rest []string
		for _, id := range ids {
			if id != old {
				rest = append(rest, id)
			}
		}
		cl := c.Client(rest...)
		heal := c.Partition(old)
		start := time.Now()
		c.Kill(old)
		c.Eventually(converge, "new leader", func() error {
			if ls := c.Leaders(); len(ls) != 1 || ls[0] == old {
				return fmt.Errorf("leaders %v", ls)
			}
			return nil
		})
		e := time.Since(start)
		c.Eventually(converge, "write", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := cl.Put(ctx, "/failover", strconv.Itoa(i))
			return err
		})
		w := time.Since(start)
		b.Logf("run %d: %s killed; new leader after %.1f s, write accepted after %.1f s", i, old, e.Seconds(), w.Seconds())
		total += w
		elect += e
		worst = max(worst, w)
		worstElect = max(worstElect, e)
		b.StopTimer()
		heal()
		n, _ := strconv.Atoi(old[1:])
		c.Start(n)
		c.WaitMembers(converge, ids...)
		b.StartTimer()
	}
	b.ReportMetric((elect / time.Duration(b.N)).Seconds(), "s-to-new-leader/op")
	b.ReportMetric(worstElect.Seconds(), "worst-s-to-new-leader")
	b.ReportMetric((total / time.Duration(b.N)).Seconds(), "s-to-write/op")
	b.ReportMetric(worst.Seconds(), "worst-s-to-write")
	b.ReportMetric(reads, "store-reads/s")
	b.ReportMetric(puts, "store-puts/s")
	b.ReportMetric(lists, "store-lists/s")
	b.ReportMetric(onLease, "lease-req/s")
}
