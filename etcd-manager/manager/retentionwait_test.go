package manager_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kopsnode/agents/etcd-manager/app"
	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/harness"
	"github.com/kopsnode/agents/etcd-manager/manager"
	"github.com/kopsnode/agents/etcd-manager/restore"
)

// TestRetentionWaitsForRestore: retention runs every 200 ms under a
// policy that deletes a backup five days old, but while a restore is in
// progress (it reads its backup and segments) it deletes nothing: a
// five-day-old backup written while the restore runs stays until the
// restore ended (while the leader logs that retention waits), and goes at
// a pass after it; the point-in-time base of 3 hours ago stays.
func TestRetentionWaitsForRestore(t *testing.T) {
	t.Parallel()
	c := harness.New(t, harness.Options{IPPrefix: "127.44.231", Versions: []string{version}, Mutate: func(cfg *manager.Config) {
		cfg.Backups.Interval = 0
		cfg.Backups.Retention = backup.Policy{HourlyDays: 1, DailyDays: 3}
		cfg.Backups.RetentionInterval = 200 * time.Millisecond
	}})
	// A backup of 3 hours ago is the point-in-time base that retention
	// keeps (the newest one older than backup.RecentWindow), so that the
	// five-day-old one written below is retention's to delete.
	base := putOldBackup(t, c.Store, c.Layout, time.Now().UTC().Add(-3*time.Hour))
	c.SetSpec(3, version)
	ids := startN(c, 3)
	c.WaitMembers(converge, ids...)
	c.Put("/k", "v")
	name := backupNow(t, c)

	ctx, cancel := context.WithTimeout(context.Background(), 3*converge)
	defer cancel()
	out, errOut, code := runCtl(t, ctlArgs(c, "restore-backup", "-o", "json", name)...)
	var q app.RestoreQueued
	if code != 0 || json.Unmarshal([]byte(out), &q) != nil || q.CommandID == "" {
		t.Fatalf("restore-backup: exit %d: %q %q", code, out, errOut)
	}
	c.Eventually(converge, "the restore in progress", func() error {
		if _, ok, err := restore.Active(ctx, c.Store, c.Layout); err != nil || !ok {
			return fmt.Errorf("no restore active (%v)", err)
		}
		return nil
	})
	// No pass that looked before the restore began is still deleting: a
	// restore starts only between retention passes.
	old := putOldBackup(t, c.Store, c.Layout, time.Now().UTC().Add(-5*24*time.Hour))
	present := func() bool { return backupListed(t, ctx, c, old) }
	checks := 0
	for {
		// Presence first, then the restore's state: a restore that is
		// still active after the backup was seen gone was active when it
		// went (a restore is active once, from queueing to its end). Gone
		// with the restore ended is retention's pass after the end.
		p := present()
		_, active, err := restore.Active(ctx, c.Store, c.Layout)
		if err != nil {
			t.Fatal(err)
		}
		if !p && active {
			t.Fatalf("retention deleted %s while a restore was in progress (after %d checks)", old, checks)
		}
		if !active {
			break
		}
		checks++
		if ctx.Err() != nil {
			t.Fatal("the restore did not end")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if checks < 3 {
		t.Fatalf("the restore ended %d checks after the old backup was written: too soon to show that retention waited", checks)
	}
	t.Logf("retention left %s alone for %d checks while the restore ran", old, checks)
	c.Eventually(converge, "retention deletes the old backup after the restore", func() error {
		if present() {
			return fmt.Errorf("%s still there", old)
		}
		return nil
	})
	if !backupListed(t, ctx, c, base) {
		t.Fatalf("retention deleted %s, the point-in-time base", base)
	}
	s, _, ok, err := restore.Load(ctx, c.Store, c.Layout, q.CommandID)
	if err != nil || !ok || s.Phase != restore.PhaseDone {
		t.Fatalf("restore state %+v, %v", s, err)
	}
}

// backupListed says whether full backup name is listed.
func backupListed(t *testing.T, ctx context.Context, c *harness.Cluster, name string) bool {
	t.Helper()
	ls, err := backup.List(ctx, c.Store, c.Layout)
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(ls.Backups, func(m backup.Meta) bool { return m.Name == name })
}
