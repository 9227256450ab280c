package manager_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kopsnode/agents/etcd-manager/app"
	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/harness"
	"github.com/kopsnode/agents/etcd-manager/manager"
	"github.com/kopsnode/agents/pkg/cli"
	"github.com/kopsnode/agents/pkg/store/gcs"
	"github.com/kopsnode/agents/pkg/store/s3"
	"github.com/kopsnode/agents/pkg/store/storeurl"
	"github.com/kopsnode/agents/pkg/testtools"
)

// metric returns the value of a metric (a counter or gauge) with the given
// labels besides etcd_cluster, or -1e9 when it is absent.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	return -1e9
}

func runCtl(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := app.EtcdManagerCtl().Run(context.Background(), &cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader("")}, args)
	return out.String(), errb.String(), code
}

// TestScheduledBackups runs one member whose leader backs up every 2 s to
// a backup store on a real S3 server (MinIO) beside a file state store: a
// scheduled backup appears whose meta matches the live cluster and whose
// object reads back as a valid snapshot; metrics and status show it;
// `etcd-manager-ctl backup-now` gets one within seconds and `list-backups`
// lists it; with the backup store down, etcd keeps running and serving,
// the instance keeps leading and the failures are counted by reason;
// backups resume when the store is back.
func TestScheduledBackups(t *testing.T) {
	mio := testtools.StartMinIO(t, testtools.MinIOOptions{})
	mio.CreateBucket(t, "backups", false)
	bst, err := s3.New(context.Background(), s3.Options{Bucket: "backups", Prefix: "etcd", Endpoint: mio.Endpoint, Region: mio.Region,
		PathStyle: true, AccessKey: mio.AccessKey, SecretKey: mio.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bst.Close() })
	reg := prometheus.NewRegistry()
	c := harness.New(t, harness.Options{IPPrefix: "127.44.63", Versions: []string{version}, Mutate: func(cfg *manager.Config) {
		cfg.Backups.Interval = 2 * time.Second
		cfg.Backups.Store = bst
		cfg.MetricsRegistry = reg
	}})
	c.SetSpec(1, version)
	m1 := c.Start(1)
	c.WaitMembers(converge, "m1")
	cl := c.Client("m1")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for i := 0; i < 200; i++ {
		if _, err := cl.Put(ctx, fmt.Sprintf("/registry/k%03d", i), strings.Repeat("x", 500)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 200; i += 10 {
		if _, err := cl.Delete(ctx, fmt.Sprintf("/registry/k%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	lastWrite := time.Now()
	resp, err := cl.Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	rev, count := resp.Header.Revision, resp.Count

	// A scheduled backup taken after the last write has the cluster's
	// revision and key count.
	var meta backup.Meta
	c.Eventually(converge, "a scheduled backup after the last write", func() error {
		ls, err := backup.List(ctx, bst, c.Layout)
		if err != nil {
			return err
		}
		for _, m := range ls.Backups {
			if m.Reason == "scheduled" && m.Started.After(lastWrite) {
				meta = m
				return nil
			}
		}
		return fmt.Errorf("%d backups, none scheduled after %s", len(ls.Backups), lastWrite)
	})
	if meta.Revision != rev || meta.KeyCount != count {
		t.Fatalf("backup %s: revision %d, %d keys; the cluster: revision %d, %d keys", meta.Name, meta.Revision, meta.KeyCount, rev, count)
	}
	st, _ := m1.M.Status(ctx)
	cr, _ := c.Created()
	if meta.Writer.LeaderID != "m1" || meta.Writer.LeaderTerm != st.LeaderTerm || meta.Spec.MemberCount != 1 || meta.Spec.EtcdVersion != version ||
		meta.ClusterToken != cr.ClusterToken || meta.EtcdVersion != version || meta.Member != "m1" {
		t.Fatalf("meta %+v; leader term %d, token %s", meta, st.LeaderTerm, cr.ClusterToken)
	}
	dir := t.TempDir()
	if _, err := backup.Read(ctx, bst, c.Layout, meta.Name, filepath.Join(dir, "snap")); err != nil {
		t.Fatal(err)
	}
	if err := backup.ExtractDB(filepath.Join(dir, "snap"), filepath.Join(dir, "db")); err != nil {
		t.Fatal(err)
	}
	if ds, err := backup.Inspect(filepath.Join(dir, "db")); err != nil || ds.Revision != rev || ds.KeyCount != count {
		t.Fatalf("the stored snapshot's database: %+v, %v", ds, err)
	}
	// Nothing went to the state store.
	if infos, err := c.Store.List(ctx, backup.FullPrefix(c.Layout)); err != nil || len(infos) != 0 {
		t.Fatalf("backups in the state store: %v, %v", infos, err)
	}
	if n := metric(t, reg, "etcd_manager_backups_total", nil); n < 1 {
		t.Fatalf("etcd_manager_backups_total = %v", n)
	}
	if age := metric(t, reg, "etcd_manager_backup_age_seconds", nil); age < 0 || age > 30 {
		t.Fatalf("etcd_manager_backup_age_seconds = %v", age)
	}
	if b := metric(t, reg, "etcd_manager_backup_stored_bytes", nil); b <= 0 {
		t.Fatalf("etcd_manager_backup_stored_bytes = %v", b)
	}
	if f := metric(t, reg, "etcd_manager_backup_failures_total", map[string]string{"reason": "store"}); f != 0 {
		t.Fatalf("store failures %v before the store failed", f)
	}
	st, _ = m1.M.Status(ctx)
	if st.Backups == nil || st.Backups.LastGood == nil || st.Backups.Store != bst.URL() || st.Backups.NextScheduled.IsZero() {
		t.Fatalf("status backups %+v", st.Backups)
	}
	var human bytes.Buffer
	if err := app.PrintStatus(&human, st); err != nil || !strings.Contains(human.String(), "last backup:") || !strings.Contains(human.String(), st.Backups.LastGood.Name[:10]) {
		t.Fatalf("status:\n%s", human.String())
	}

	// etcd-manager-ctl backup-now: the leader takes one within seconds.
	common := []string{"--store", c.Store.URL(), "--cluster-name", c.Layout.Cluster}
	out, errs, code := runCtl(t, append([]string{"backup-now", "--wait", "60s", "-o", "json"}, common...)...)
	if code != 0 {
		t.Fatalf("backup-now: %d %s %s", code, out, errs)
	}
	var now app.BackupNowResult
	if err := json.Unmarshal([]byte(out), &now); err != nil || now.Result == nil || now.Result.Error != "" || now.Result.Detail == "" {
		t.Fatalf("backup-now -o json: %s (%v)", out, err)
	}
	got, err := backup.ReadMeta(ctx, bst, c.Layout, now.Result.Detail)
	if err != nil || got.Reason != "command "+now.CommandID {
		t.Fatalf("backup of the command: %+v, %v", got, err)
	}
	// list-backups reads the backup store with the environment's S3
	// settings, as an operator's shell would.
	t.Setenv(storeurl.EnvS3Endpoint, mio.Endpoint)
	t.Setenv(storeurl.EnvS3AccessKey, mio.AccessKey)
	t.Setenv(storeurl.EnvS3SecretKey, mio.SecretKey)
	t.Setenv(storeurl.EnvS3Region, mio.Region)
	listArgs := append([]string{"list-backups", "--backup-store", "s3://backups/etcd"}, common...)
	out, errs, code = runCtl(t, append(listArgs, "-o", "json")...)
	var ls backup.Listing
	if code != 0 || json.Unmarshal([]byte(out), &ls) != nil || len(ls.Backups) < 2 || ls.Backups[0].Name < now.Result.Detail {
		t.Fatalf("list-backups -o json: %d %s %s", code, out, errs)
	}
	if out, errs, code = runCtl(t, listArgs...); code != 0 || !strings.Contains(out, now.Result.Detail) || !strings.Contains(out, "command "+now.CommandID) {
		t.Fatalf("list-backups: %d %s %s", code, out, errs)
	}
	out, errs, code = runCtl(t, append([]string{"status", "--backup-store", "s3://backups/etcd", "-o", "json"}, common...)...)
	var cs app.ControlStatus
	if code != 0 || json.Unmarshal([]byte(out), &cs) != nil || cs.LastBackup == nil || cs.LastBackup.Name < now.Result.Detail {
		t.Fatalf("etcd-manager-ctl status: %d %s %s", code, out, errs)
	}

	// The backup store goes down: etcd keeps running and serving, m1 keeps
	// leading, failures are counted with reason "store".
	pid := m1.M.EtcdPid()
	okBefore := metric(t, reg, "etcd_manager_backups_total", nil)
	mio.Kill(t)
	c.Eventually(converge, "a backup failure counted", func() error {
		if f := metric(t, reg, "etcd_manager_backup_failures_total", map[string]string{"reason": "store"}); f < 1 {
			return fmt.Errorf("store failures %v", f)
		}
		return nil
	})
	if !m1.M.IsLeader() || m1.M.EtcdPid() != pid {
		t.Fatalf("after a failed backup: leader %v, etcd pid %d (was %d)", m1.M.IsLeader(), m1.M.EtcdPid(), pid)
	}
	c.Put("/during-store-outage", "x")
	st, _ = m1.M.Status(ctx)
	if st.Backups.FailureReason != "store" || !strings.Contains(st.Backups.LastError, "s3://backups/etcd") {
		t.Fatalf("status during the outage: %+v", st.Backups)
	}
	if hz := m1.M.Health(ctx); hz != nil {
		t.Fatalf("health during a backup store outage: %v", hz)
	}
	mio.Restart(t)
	c.Eventually(converge, "backups resume", func() error {
		if n := metric(t, reg, "etcd_manager_backups_total", nil); n <= okBefore {
			return fmt.Errorf("backups_total %v", n)
		}
		return nil
	})
}

// TestBackupBeforeMembershipChange: with the schedule off, the leader
// takes a backup before it adds a member, and none otherwise; the backups
// go to a gs:// backup store (fake-gcs-server).
func TestBackupBeforeMembershipChange(t *testing.T) {
	t.Parallel()
	gcsrv := testtools.StartFakeGCS(t)
	gcsrv.CreateBucket(t, "backups")
	bst, err := gcs.New(context.Background(), gcs.Options{Bucket: "backups", Prefix: "etcd", Endpoint: gcsrv.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bst.Close() })
	c := harness.New(t, harness.Options{IPPrefix: "127.44.64", Versions: []string{version}, Mutate: func(cfg *manager.Config) {
		cfg.Backups.Interval = 0
		// No delta chain: its first full backup would be fresh enough for
		// the membership change, which then needs none of its own.
		cfg.Backups.DeltaInterval = 0
		cfg.Backups.Store = bst
	}})
	c.SetSpec(1, version)
	c.Start(1)
	c.WaitMembers(converge, "m1")
	c.Put("/before-growth", "x")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ls, err := backup.List(ctx, bst, c.Layout)
	if err != nil || len(ls.Backups) != 0 {
		t.Fatalf("backups with the schedule off and no change: %+v, %v", ls, err)
	}
	c.SetSpec(3, version)
	c.Start(2)
	c.Start(3)
	c.WaitMembers(converge, "m1", "m2", "m3")
	ls, err = backup.List(ctx, bst, c.Layout)
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	found := false
	for _, m := range ls.Backups {
		reasons = append(reasons, m.Reason)
		if m.Reason == "before adding member m2" && m.KeyCount >= 1 && m.Writer.LeaderID == "m1" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no backup before adding m2; backups: %v", reasons)
	}
	if _, err := backup.Read(ctx, bst, c.Layout, ls.Backups[0].Name, filepath.Join(t.TempDir(), "snap")); err != nil {
		t.Fatal(err)
	}
}

// TestBackupsFollowTheLeader: on three members only the leader backs up,
// each backup names the term that wrote it; after the leader's machine
// dies, the new leader's term takes over the schedule and nothing is
// written under the dead leader's term afterwards.
func TestBackupsFollowTheLeader(t *testing.T) {
	t.Parallel()
	c := harness.New(t, harness.Options{IPPrefix: "127.44.65", Versions: []string{version}, Mutate: func(cfg *manager.Config) {
		cfg.Backups.Interval = time.Second
	}})
	c.SetSpec(3, version)
	ids := startN(c, 3)
	c.WaitMembers(converge, ids...)
	c.Put("/k", "v")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	leaderOf := func() (string, int64) {
		l := c.WaitLeader(converge)
		st, _ := c.Instance(l).M.Status(ctx)
		return l, st.LeaderTerm
	}
	backupsBy := func(id string, term int64, after time.Time) int {
		ls, err := backup.List(ctx, c.Store, c.Layout)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, m := range ls.Backups {
			if m.Writer.LeaderID == id && m.Writer.LeaderTerm == term && !m.Started.Before(after) {
				n++
			}
		}
		return n
	}
	l1, term1 := leaderOf()
	c.Eventually(converge, "two backups by the first leader", func() error {
		if n := backupsBy(l1, term1, time.Time{}); n < 2 {
			return fmt.Errorf("%d backups by %s in term %d", n, l1, term1)
		}
		return nil
	})
	ls, err := backup.List(ctx, c.Store, c.Layout)
	if err != nil {
		t.Fatal(err)
	}
	// Only a lease holder backs up: each term has one writer (a term is
	// one holding of the lease; with the harness's 2 s lease the first
	// leader may have changed while the cluster formed), and term1's is l1.
	writers := map[int64]string{}
	for _, m := range ls.Backups {
		if m.Reason != "scheduled" {
			continue
		}
		if w, ok := writers[m.Writer.LeaderTerm]; (ok && w != m.Writer.LeaderID) || m.Writer.LeaderTerm == 0 || (m.Writer.LeaderTerm == term1 && m.Writer.LeaderID != l1) {
			t.Fatalf("backup %s written by %s in term %d; term %d is %s's (writers so far %v)", m.Name, m.Writer.LeaderID, m.Writer.LeaderTerm, term1, l1, writers)
		}
		writers[m.Writer.LeaderTerm] = m.Writer.LeaderID
	}
	c.Kill(l1)
	killed := time.Now()
	l2, term2 := leaderOf()
	if l2 == l1 || term2 <= term1 {
		t.Fatalf("new leader %s term %d after %s term %d", l2, term2, l1, term1)
	}
	c.Eventually(converge, "a backup by the new leader", func() error {
		if n := backupsBy(l2, term2, killed); n < 1 {
			return fmt.Errorf("no backup by %s in term %d yet", l2, term2)
		}
		return nil
	})
	if n := backupsBy(l1, term1, killed.Add(time.Second)); n != 0 {
		t.Fatalf("%d backups started by the dead leader after its machine died", n)
	}
	st, _ := c.Instance(l2).M.Status(ctx)
	if st.Backups == nil || st.Backups.LastGood == nil || st.Backups.LastError != "" {
		t.Fatalf("new leader's backup status %+v", st.Backups)
	}
	// A follower reports no schedule of its own.
	for _, id := range c.Running() {
		if id == l2 {
			continue
		}
		fs, _ := c.Instance(id).M.Status(ctx)
		if fs.Backups == nil || !fs.Backups.NextScheduled.IsZero() {
			t.Fatalf("follower %s backup status %+v", id, fs.Backups)
		}
	}
}
