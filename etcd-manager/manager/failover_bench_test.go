package manager_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/kopsnode/agents/etcd-manager/harness"
)

// BenchmarkFailover measures the time from killing the leader's machine
// (manager and etcd) until another instance leads and the cluster accepts a
// write, with the harness's short timings (lease 2s, tick 500ms). Run with
// go test ./etcd-manager/manager -run '^$' -bench Failover -benchtime 3x
func BenchmarkFailover(b *testing.B) {
	c := harness.New(b, harness.Options{IPPrefix: "127.44.20", Versions: []string{version}})
	c.SetSpec(3, version)
	var ids []string
	for i := 1; i <= 3; i++ {
		ids = append(ids, c.Start(i).ID)
	}
	c.WaitMembers(converge, ids...)
	var total, worst, elect time.Duration
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
		d := time.Since(start)
		total += d
		elect += e
		worst = max(worst, d)
		b.StopTimer()
		n, _ := strconv.Atoi(old[1:])
		c.Start(n)
		c.WaitMembers(converge, ids...)
		b.StartTimer()
	}
	b.ReportMetric((elect / time.Duration(b.N)).Seconds(), "s-to-new-leader/op")
	b.ReportMetric((total / time.Duration(b.N)).Seconds(), "s-to-write/op")
	b.ReportMetric(worst.Seconds(), "worst-s-to-write")
}
