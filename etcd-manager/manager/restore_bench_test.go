package manager_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/etcd-manager/app"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/restore"
	"github.com/kopsnode/agents/pkg/cli"
)

// BenchmarkRestore measures a restore of a 3-member cluster from a full
// backup: from the restore-backup command queued until the leader's
// result says the cluster is open and a write through the members'
// usual client URLs succeeds (target: under 30 s), with the harness's
// timings (tick 500ms, lease 2s). KOPSNODE_BENCH_RESTORE_KEYS sets the
// keys written before the backup (default 10,000 of 1 KB). Run with
// go test ./etcd-manager/manager -run '^$' -bench Restore -benchtime 2x
func BenchmarkRestore(b *testing.B) {
	keys := 10000
	if v := os.Getenv("KOPSNODE_BENCH_RESTORE_KEYS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			b.Fatalf("KOPSNODE_BENCH_RESTORE_KEYS=%q is not a count", v)
		}
		keys = n
	}
	c, ids := restoreCluster(b, "127.44.97", version)
	cl := c.Client(ids...)
	ctx := context.Background()
	val := strings.Repeat("v", 1024)
	for i := 0; i < keys; i++ {
		if _, err := cl.Put(ctx, fmt.Sprintf("/bench/%06d", i), val); err != nil {
			b.Fatal(err)
		}
	}
	out, errOut, code := runCtlB(b, ctlArgs(c, "backup-now", "--wait", "2m")...)
	if code != 0 {
		b.Fatalf("backup-now: %s %s", out, errOut)
	}
	name := strings.Fields(out)[1]
	var total, worst time.Duration
	phases := map[restore.Phase]time.Duration{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("20260101T0000%02d.000Z-restore-backup", i)
		start := time.Now()
		if err := control.QueueCommand(ctx, c.Store, c.Layout, control.Command{ID: id, Kind: control.KindRestoreBackup,
			Args: map[string]string{restore.ArgBackup: name}, Created: start}); err != nil {
			b.Fatal(err)
		}
		c.Eventually(2*converge, "the restore's result", func() error {
			r, ok, err := control.ReadResult(ctx, c.Store, c.Layout, id)
			switch {
			case err != nil:
				return err
			case !ok:
				return fmt.Errorf("no result yet")
			case r.Error != "":
				b.Fatalf("restore failed: %s", r.Error)
			}
			return nil
		})
		wcl := c.Client(ids...)
		c.Eventually(converge, "a write to the restored cluster", func() error {
			wctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			_, err := wcl.Put(wctx, "/bench-after", strconv.Itoa(i))
			return err
		})
		d := time.Since(start)
		total += d
		worst = max(worst, d)
		b.StopTimer()
		if s, _, ok, err := restore.Load(ctx, c.Store, c.Layout, id); err == nil && ok {
			// Each event records the phase entered at its time.
			prev, phase := s.Started, restore.PhaseValidating
			for _, e := range s.History {
				phases[phase] += e.Time.Sub(prev)
				prev, phase = e.Time, e.Phase
			}
		}
		b.StartTimer()
	}
	b.StopTimer()
	n := time.Duration(b.N)
	b.ReportMetric((total / n).Seconds(), "s-to-open/op")
	b.ReportMetric(worst.Seconds(), "worst-s-to-open")
	var parts []string
	for _, p := range []restore.Phase{restore.PhaseValidating, restore.PhaseRestoring, restore.PhaseReplaying, restore.PhaseClearing, restore.PhaseOpening} {
		if d, ok := phases[p]; ok {
			parts = append(parts, fmt.Sprintf("%s %.1fs", p, (d/n).Seconds()))
		}
	}
	b.Logf("%d keys of 1 KB; mean time in each phase: %s", keys, strings.Join(parts, ", "))
}

func runCtlB(b *testing.B, args ...string) (string, string, int) {
	b.Helper()
	var out, errb bytes.Buffer
	code := app.EtcdManagerCtl().Run(context.Background(), &cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader("")}, args)
	return out.String(), errb.String(), code
}
