package manager_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kopsnode/agents/etcd-manager/app"
	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/harness"
	"github.com/kopsnode/agents/etcd-manager/manager"
	"github.com/kopsnode/agents/etcd-manager/restore"
)

// restoreCluster starts a 3-member cluster of etcd version v with the
// schedule of backups off (the harness installs etcdutl beside etcd).
func restoreCluster(t testing.TB, prefix, v string) (*harness.Cluster, []string) {
	return restoreClusterWith(t, prefix, v, nil)
}

// restoreClusterWith is restoreCluster with more changes to each
// instance's config.
func restoreClusterWith(t testing.TB, prefix, v string, mutate func(*manager.Config)) (*harness.Cluster, []string) {
	t.Helper()
	c := harness.New(t, harness.Options{IPPrefix: prefix, Versions: []string{v}, Mutate: func(cfg *manager.Config) {
		cfg.Backups.Interval = 0
		if mutate != nil {
			mutate(cfg)
		}
	}})
	c.SetSpec(3, v)
	var ids []string
	for i := 1; i <= 3; i++ {
		ids = append(ids, c.Start(i).ID)
	}
	c.WaitMembers(converge, ids...)
	return c, ids
}

func ctlArgs(c *harness.Cluster, cmd string, more ...string) []string {
	return append([]string{cmd, "--store", c.Store.URL(), "--cluster-name", c.Layout.Cluster}, more...)
}

// backupNow takes a full backup through etcd-manager-ctl and returns its name.
func backupNow(t *testing.T, c *harness.Cluster) string {
	t.Helper()
	out, errOut, code := runCtl(t, ctlArgs(c, "backup-now", "--wait", "60s", "-o", "json")...)
	if code != 0 {
		t.Fatalf("backup-now: exit %d: %s %s", code, out, errOut)
	}
	var r app.BackupNowResult
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Result == nil || r.Result.Detail == "" {
		t.Fatalf("backup-now output %q: %v", out, err)
	}
	return r.Result.Detail
}

func mustGet(t *testing.T, cl *clientv3.Client, key string) *clientv3.GetResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cl.Get(ctx, key, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestRestoreBackup restores a 3-member cluster from a full backup with
// etcd-manager-ctl restore-backup, for etcd 3.5 and 3.7: what was written
// before the backup is there, what was written after it is gone, the
// revision is bumped past the old cluster's (a watch from an old revision
// is compacted), the API server endpoint leases are gone, every member's
// old data directory is kept aside, the cluster runs under a new token
// that the created marker names, and the restore ran once.
func TestRestoreBackup(t *testing.T) {
	t.Parallel()
	for i, v := range []string{"3.5.21", "3.7.3"} {
		t.Run(v, func(t *testing.T) {
			c, ids := restoreCluster(t, fmt.Sprintf("127.44.%d", 90+i), v)
			oldCreated, _ := c.Created()
			c.Put("/before/a", "1")
			c.Put("/registry/masterleases/10.0.0.9", "stale")
			c.Put("/registry/leases/kube-system/kube-apiserver-3kxq", "stale")
			c.Put("/registry/leases/kube-system/kube-controller-manager", "kept")
			name := backupNow(t, c)
			c.Put("/after/b", "2")
			cl := c.Client(ids...)
			oldRev := mustGet(t, cl, "/after/b").Header.Revision

			start := time.Now()
			out, errOut, code := runCtl(t, ctlArgs(c, "restore-backup", "--wait", "2m", "-o", "json", name)...)
			if code != 0 {
				t.Fatalf("restore-backup: exit %d: %s %s", code, out, errOut)
			}
			var q app.RestoreQueued
			if err := json.Unmarshal([]byte(out), &q); err != nil || q.Result == nil || q.Result.Error != "" || q.Backup != name {
				t.Fatalf("restore-backup output %q: %v", out, err)
			}
			t.Logf("restore-backup %s: done in %s: %s", name, time.Since(start).Round(time.Millisecond), q.Result.Detail)

			c.WaitMembers(converge, ids...)
			c.ExpectKey(converge, "/before/a", "1", ids...)
			cl = c.Client(ids...)
			if kvs := mustGet(t, cl, "/after/").Kvs; len(kvs) != 0 {
				t.Fatalf("data written after the backup survived the restore: %v", kvs)
			}
			for _, p := range restore.StalePrefixes {
				if kvs := mustGet(t, cl, p).Kvs; len(kvs) != 0 {
					t.Fatalf("stale API server lease %s survived the restore", kvs[0].Key)
				}
			}
			if kvs := mustGet(t, cl, "/registry/leases/kube-system/kube-controller-manager").Kvs; len(kvs) != 1 {
				t.Fatal("another lease was deleted with the API servers' ones")
			}
			resp := mustGet(t, cl, "/before/a")
			if resp.Header.Revision <= oldRev {
				t.Fatalf("revision after the restore %d is not past the old cluster's %d", resp.Header.Revision, oldRev)
			}
			// A client of the old cluster resuming its watch is told to
			// resync (compacted), not fed stale events.
			wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer wcancel()
			wr := <-cl.Watch(wctx, "/", clientv3.WithPrefix(), clientv3.WithRev(oldRev))
			if !errors.Is(wr.Err(), rpctypes.ErrCompacted) || wr.CompactRevision <= oldRev {
				t.Fatalf("watch from the old revision %d: err %v, compact revision %d; want ErrCompacted past it", oldRev, wr.Err(), wr.CompactRevision)
			}

			cr, _ := c.Created()
			if cr.ClusterToken == oldCreated.ClusterToken || len(cr.InitialMembers) != 3 {
				t.Fatalf("created marker after the restore: %+v (old token %s)", cr, oldCreated.ClusterToken)
			}
			for _, id := range ids {
				in := c.Instance(id)
				st, _ := in.M.Status(context.Background())
				if st.Local.ClusterToken != cr.ClusterToken {
					t.Fatalf("%s runs token %s, the marker says %s", id, st.Local.ClusterToken, cr.ClusterToken)
				}
				asides, err := restore.AsideDirs(in.DataDir)
				if err != nil || len(asides) != 1 {
					t.Fatalf("%s: moved-aside data dirs %v, %v; want one", id, asides, err)
				}
				if _, err := os.Stat(filepath.Join(asides[0], "member", "snap", "db")); err != nil {
					t.Fatalf("%s: the old data is not kept aside: %v", id, err)
				}
			}
			s, _, ok, err := restore.Load(context.Background(), c.Store, c.Layout, q.CommandID)
			if err != nil || !ok || s.Phase != restore.PhaseDone || s.OldClusterToken != oldCreated.ClusterToken || s.BackupBefore == "" || s.Cleared != 2 {
				t.Fatalf("restore state %+v, %v", s, err)
			}
			if ids, _ := restore.List(context.Background(), c.Store, c.Layout); len(ids) != 1 {
				t.Fatalf("restore states %v; want one", ids)
			}
			// The leader backed the restored cluster up (the base of its
			// delta chain and of the verification it asked for).
			c.Eventually(converge, "a backup after the restore", func() error {
				ls, err := backup.List(context.Background(), c.Store, c.Layout)
				if err != nil {
					return err
				}
				for _, m := range ls.Backups {
					if m.Reason == "after restore "+q.CommandID && m.ClusterToken == cr.ClusterToken {
						return nil
					}
				}
				return fmt.Errorf("none of %d backups was taken after restore %s", len(ls.Backups), q.CommandID)
			})
			// The cluster is managed again: it takes writes, and a new
			// backup names the new token.
			c.Put("/after-restore", "3")
			if b := backupNow(t, c); b == name {
				t.Fatal("no new backup")
			} else if m, err := backup.ReadMeta(context.Background(), c.Store, c.Layout, b); err != nil || m.ClusterToken != cr.ClusterToken {
				t.Fatalf("backup after the restore: %+v, %v", m, err)
			}
		})
	}
}

// TestRestoreRefusesBadBackups: an unknown name, a meta object that does
// not parse, a missing meta object and a damaged data object are refused
// by etcd-manager-ctl before anything is queued, naming the object; a
// restore queued around the ctl with a damaged object is refused by the
// leader before anything is stopped: the result names the object, every
// etcd keeps its process and serves the old data.
func TestRestoreRefusesBadBackups(t *testing.T) {
	t.Parallel()
	c, ids := restoreCluster(t, "127.44.94", version)
	c.Put("/k", "old")
	good := backupNow(t, c)
	bad := backupNow(t, c)
	ctx := context.Background()
	root := strings.TrimPrefix(c.Store.URL(), "file://")
	pids := map[string]int{}
	for _, id := range ids {
		pids[id] = c.Instance(id).M.EtcdPid()
	}
	expectRefused := func(what string, want ...string) {
		t.Helper()
		args := ctlArgs(c, "restore-backup", what)
		if strings.HasPrefix(what, "@") {
			args = ctlArgs(c, "restore-to", strings.TrimPrefix(what, "@"))
		}
		out, errOut, code := runCtl(t, args...)
		if code == 0 {
			t.Fatalf("restore of %s accepted: %s", what, out)
		}
		for _, w := range want {
			if !strings.Contains(errOut, w) {
				t.Fatalf("restore of %s: error %q does not say %q", what, errOut, w)
			}
		}
	}
	expectRefused("2020-01-01T00-00-00.000Z-full", "no meta object", "2020-01-01T00-00-00.000Z-full/meta.json", "nothing was queued")
	expectRefused("latest", "is not of the form")

	// A damaged data object: one byte flipped in the stored object.
	obj := filepath.Join(root, backup.DataKey(c.Layout, bad))
	b, err := os.ReadFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(obj, b, 0o600); err != nil {
		t.Fatal(err)
	}
	expectRefused(bad, "integrity check failed", backup.DataKey(c.Layout, bad), "nothing was queued")

	// The leader refuses it too, before stopping anything.
	cmd := control.Command{ID: "20260101T000000.000Z-restore-backup", Kind: control.KindRestoreBackup, Args: map[string]string{"backup": bad}, Created: time.Now()}
	if err := control.QueueCommand(ctx, c.Store, c.Layout, cmd); err != nil {
		t.Fatal(err)
	}
	var res control.Result
	c.Eventually(converge, "the leader's result", func() error {
		r, ok, err := control.ReadResult(ctx, c.Store, c.Layout, cmd.ID)
		if err != nil || !ok {
			return fmt.Errorf("no result (%v)", err)
		}
		res = r
		return nil
	})
	if !strings.Contains(res.Error, "integrity check failed") || !strings.Contains(res.Error, backup.DataKey(c.Layout, bad)) {
		t.Fatalf("leader's result %+v does not name the damaged object", res)
	}
	for _, id := range ids {
		if p := c.Instance(id).M.EtcdPid(); p != pids[id] {
			t.Fatalf("%s: etcd pid %d, was %d: something was stopped", id, p, pids[id])
		}
		if asides, _ := restore.AsideDirs(c.Instance(id).DataDir); len(asides) != 0 {
			t.Fatalf("%s: data moved aside by a refused restore: %v", id, asides)
		}
	}
	c.ExpectKey(converge, "/k", "old", ids...)

	// A meta object that does not parse, and one that is missing.
	metaKey := filepath.Join(root, backup.MetaKey(c.Layout, bad))
	if err := os.WriteFile(metaKey, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	expectRefused(bad, backup.MetaKey(c.Layout, bad), "nothing was queued")
	if err := os.Remove(metaKey); err != nil {
		t.Fatal(err)
	}
	expectRefused(bad, "no meta object", "nothing was queued")

	// A restore in progress refuses a second one.
	now := time.Now().UTC()
	s := restore.State{FormatVersion: restore.FormatVersion, CommandID: "x", Kind: control.KindRestoreBackup, Phase: restore.PhaseValidating, Started: now, Updated: now}
	if _, err := restore.Save(ctx, c.Store, c.Layout, s, ""); err != nil {
		t.Fatal(err)
	}
	expectRefused(good, "restore x is in progress")
	if cs, err := app.ReadControlStatus(ctx, c.Store, c.Layout); err != nil || len(cs.Commands) != 0 {
		t.Fatalf("pending commands after refusals: %+v, %v", cs.Commands, err)
	}
}

// TestRestoreLeaderKilled: the leader is killed while the members
// restore; the next leader resumes the restore from its persisted state
// and completes it once the killed machine is back, and it ran once (one
// state, one claim, its history names both terms).
func TestRestoreLeaderKilled(t *testing.T) {
	t.Parallel()
	c, ids := restoreCluster(t, "127.44.95", version)
	c.Put("/before", "1")
	name := backupNow(t, c)
	c.Put("/after", "2")
	ctx := context.Background()
	out, errOut, code := runCtl(t, ctlArgs(c, "restore-backup", "-o", "json", name)...)
	if code != 0 {
		t.Fatalf("restore-backup: exit %d: %s %s", code, out, errOut)
	}
	var q app.RestoreQueued
	if err := json.Unmarshal([]byte(out), &q); err != nil {
		t.Fatal(err)
	}
	var first restore.State
	c.Eventually(converge, "the restore past validation", func() error {
		s, _, ok, err := restore.Load(ctx, c.Store, c.Layout, q.CommandID)
		if err != nil || !ok || s.Phase == restore.PhaseValidating {
			return fmt.Errorf("state %v %v", s.Phase, err)
		}
		if s.Phase.Terminal() {
			t.Fatalf("the restore ended (%s) before its leader could be killed: %+v", s.Phase, s)
		}
		first = s
		return nil
	})
	// etcd-manager-ctl status shows the restore while it runs.
	if out, errOut, code := runCtl(t, ctlArgs(c, "status")...); code != 0 || !strings.Contains(out, "restore in progress:") || !strings.Contains(out, q.CommandID) {
		t.Fatalf("ctl status during the restore: exit %d: %s %s", code, out, errOut)
	}
	killed := first.Owner.LeaderID
	c.Kill(killed)
	// While the killed machine is down the others stay quarantined: their
	// etcd serves clients on the quarantine port only, never on the
	// client port the API server uses.
	c.Eventually(converge, "a quarantined member", func() error {
		for _, id := range c.Running() {
			in := c.Instance(id)
			st, _ := in.M.Status(ctx)
			if r := st.Local.Restore; r == nil || r.Step != string(restore.StepQuarantined) || !st.Local.EtcdRunning {
				continue
			}
			if conn, err := net.DialTimeout("tcp", net.JoinHostPort(in.IP, fmt.Sprint(harness.ClientPort)), time.Second); err == nil {
				conn.Close()
				return fmt.Errorf("quarantined %s accepts connections on its client port", id)
			}
			conn, err := net.DialTimeout("tcp", net.JoinHostPort(in.IP, fmt.Sprint(harness.ClientPort+manager.QuarantinePortOffset)), time.Second)
			if err != nil {
				return fmt.Errorf("quarantined %s: %w", id, err)
			}
			conn.Close()
			return nil
		}
		return errors.New("no member is quarantined yet")
	})
	var n int
	fmt.Sscanf(killed, "m%d", &n)
	c.Start(n)
	var res control.Result
	c.Eventually(2*converge, "the restore's result", func() error {
		r, ok, err := control.ReadResult(ctx, c.Store, c.Layout, q.CommandID)
		if err != nil || !ok {
			return fmt.Errorf("no result (%v)", err)
		}
		res = r
		return nil
	})
	if res.Error != "" {
		t.Fatalf("restore failed: %s", res.Error)
	}
	c.WaitMembers(converge, ids...)
	c.ExpectKey(converge, "/before", "1", ids...)
	if kvs := mustGet(t, c.Client(ids...), "/after").Kvs; len(kvs) != 0 {
		t.Fatal("data written after the backup survived")
	}
	s, _, _, err := restore.Load(ctx, c.Store, c.Layout, q.CommandID)
	if err != nil || s.Phase != restore.PhaseDone || s.Owner.LeaderTerm == first.Owner.LeaderTerm {
		t.Fatalf("state %+v, %v; first term %d", s, err, first.Owner.LeaderTerm)
	}
	took := false
	for _, e := range s.History {
		took = took || strings.Contains(e.Message, "taken over by")
	}
	if !took {
		t.Fatalf("history does not show the new leader taking over: %+v", s.History)
	}
	if ids, _ := restore.List(ctx, c.Store, c.Layout); len(ids) != 1 {
		t.Fatalf("restore states %v; want one", ids)
	}
}

// TestRestoreToRevision restores to a revision between two full backups:
// the older full backup plus the delta segments up to that revision,
// replayed while the cluster is quarantined. What was written up to the
// revision is there, what came after is not.
func TestRestoreToRevision(t *testing.T) {
	t.Parallel()
	c := harness.New(t, harness.Options{IPPrefix: "127.44.96", Versions: []string{version}, Mutate: func(cfg *manager.Config) {
		cfg.Backups.Interval = 0
		cfg.Backups.DeltaInterval = 500 * time.Millisecond
	}})
	c.SetSpec(3, version)
	var ids []string
	for i := 1; i <= 3; i++ {
		ids = append(ids, c.Start(i).ID)
	}
	c.WaitMembers(converge, ids...)
	ctx := context.Background()
	c.Put("/a", "1")
	first := backupNow(t, c)
	cl := c.Client(ids...)
	put := func(k, v string) int64 {
		t.Helper()
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp, err := cl.Put(pctx, k, v)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	put("/b", "2")
	if _, err := cl.Delete(ctx, "/a"); err != nil {
		t.Fatal(err)
	}
	target := put("/c", "3")
	last := put("/d", "4")
	second := backupNow(t, c)
	c.Eventually(converge, "delta segments up to the last write", func() error {
		segs, err := backup.ListSegments(ctx, c.Store, c.Layout)
		if err != nil {
			return err
		}
		for _, s := range segs.Segments {
			if s.LastRevision >= last {
				return nil
			}
		}
		return fmt.Errorf("%d segments, none reaching revision %d", len(segs.Segments), last)
	})
	out, errOut, code := runCtl(t, ctlArgs(c, "restore-to", "--wait", "2m", "-o", "json", fmt.Sprint(target))...)
	if code != 0 {
		t.Fatalf("restore-to %d: exit %d: %s %s", target, code, out, errOut)
	}
	var q app.RestoreQueued
	if err := json.Unmarshal([]byte(out), &q); err != nil || q.Result == nil || q.Result.Error != "" {
		t.Fatalf("restore-to output %q: %v", out, err)
	}
	// The base is a full backup before the target (ours, or the one the
	// delta writer took to start its chain), never the one after it.
	if q.Backup == second || q.Backup < first || q.BackupRevision >= target || q.Segments == 0 || q.TargetRevision != target {
		t.Fatalf("plan: base %s (revision %d) with %d segments to %d; want one from %s on, before revision %d (not %s), plus segments to %d",
			q.Backup, q.BackupRevision, q.Segments, q.TargetRevision, first, target, second, target)
	}
	c.WaitMembers(converge, ids...)
	c.ExpectKey(converge, "/b", "2", ids...)
	c.ExpectKey(converge, "/c", "3", ids...)
	cl = c.Client(ids...)
	for _, k := range []string{"/a", "/d"} {
		if kvs := mustGet(t, cl, k).Kvs; len(kvs) != 0 {
			t.Fatalf("%s after restoring to revision %d: %v", k, target, kvs)
		}
	}
	// A time outside the recoverable range is refused, naming the ranges.
	_, errOut, code = runCtl(t, ctlArgs(c, "restore-to", "2001-01-01T00:00:00Z")...)
	if code == 0 || !strings.Contains(errOut, "outside the recoverable range") || !strings.Contains(errOut, "recoverable:") {
		t.Fatalf("restore-to 2001: exit %d: %s", code, errOut)
	}
}

// TestRestoreRollsBack: one member cannot restore (a file is in the way
// of its spool folder) after every member moved its data aside; the
// leader rolls every member back: the old data and token are back, the
// cluster serves what it held before, nothing is left aside, and the
// command's result names the member and the path.
func TestRestoreRollsBack(t *testing.T) {
	t.Parallel()
	regs := map[string]*prometheus.Registry{}
	c, ids := restoreClusterWith(t, "127.44.98", version, func(cfg *manager.Config) {
		regs[cfg.ID] = prometheus.NewRegistry()
		cfg.MetricsRegistry = regs[cfg.ID]
	})
	oldCreated, _ := c.Created()
	c.Put("/before", "1")
	name := backupNow(t, c)
	c.Put("/after", "2")
	blocker := filepath.Join(c.Instance("m3").DataDir, "restore-spool")
	if err := os.WriteFile(blocker, []byte("in the way"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCtl(t, ctlArgs(c, "restore-backup", "--wait", "2m", "-o", "json", name)...)
	if code == 0 {
		t.Fatalf("restore-backup succeeded with a member that cannot restore: %s", out)
	}
	var q app.RestoreQueued
	if err := json.Unmarshal([]byte(out), &q); err != nil || q.Result == nil {
		t.Fatalf("restore-backup output %q (%s): %v", out, errOut, err)
	}
	if !strings.Contains(q.Result.Error, "member m3 could not restore") || !strings.Contains(q.Result.Error, blocker) {
		t.Fatalf("result %q does not name the member and the path", q.Result.Error)
	}
	c.WaitMembers(converge, ids...)
	c.ExpectKey(converge, "/after", "2", ids...)
	if cr, _ := c.Created(); cr.ClusterToken != oldCreated.ClusterToken {
		t.Fatalf("created marker changed by a rolled back restore: %s, was %s", cr.ClusterToken, oldCreated.ClusterToken)
	}
	for _, id := range ids {
		in := c.Instance(id)
		st, _ := in.M.Status(context.Background())
		if st.Local.ClusterToken != oldCreated.ClusterToken {
			t.Fatalf("%s runs token %s after the rollback, want %s", id, st.Local.ClusterToken, oldCreated.ClusterToken)
		}
		if asides, _ := restore.AsideDirs(in.DataDir); len(asides) != 0 {
			t.Fatalf("%s: %v left aside after the rollback", id, asides)
		}
	}
	s, _, _, err := restore.Load(context.Background(), c.Store, c.Layout, q.CommandID)
	if err != nil || s.Phase != restore.PhaseFailed {
		t.Fatalf("state %+v, %v", s, err)
	}
	reg := regs[s.Owner.LeaderID]
	if got := metric(t, reg, "etcd_manager_restores_total", map[string]string{"result": "failed"}); got != 1 {
		t.Fatalf("etcd_manager_restores_total{result=failed} on the leader %s = %v, want 1", s.Owner.LeaderID, got)
	}
	if got := metric(t, reg, "etcd_manager_restore_in_progress", nil); got != 0 {
		t.Fatalf("etcd_manager_restore_in_progress = %v after the restore ended", got)
	}
}
