package manager_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/backup/backuptest"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/harness"
	"github.com/kopsnode/agents/etcd-manager/manager"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/file"
)

// TestScheduledVerification: the leader verifies the newest backup by a
// test restore every 2 s; a good backup is reported verified (status,
// metrics, a record in the store); a backup damaged inside its database
// with every hash fixed up is caught by the next scheduled run and
// reported as a mismatch in status and metrics, while the last verified
// backup stays the good one.
func TestScheduledVerification(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	c := harness.New(t, harness.Options{IPPrefix: "127.44.99", Mutate: func(cfg *manager.Config) {
		cfg.Backups.Interval = 0
		// No delta chain: its first segment needs a full backup, which the
		// leader would take between the test's own, and the newest backup
		// verified would not be the one this test names.
		cfg.Backups.DeltaInterval = 0
		cfg.Backups.VerifyInterval = 2 * time.Second
		cfg.MetricsRegistry = reg
	}})
	c.SetSpec(1, "3.6.16")
	in := c.Start(0)
	c.WaitLeader(30 * time.Second)
	c.WaitMembers(60*time.Second, in.ID)
	for i := range 50 {
		c.Put(fmt.Sprintf("/registry/pods/p%02d", i), strings.Repeat("v", 100))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	takeInto := func(st store.Store) backup.Meta {
		t.Helper()
		m, err := backup.Take(ctx, c.Client(in.ID), st, c.Layout, backup.Options{Reason: "test", Spec: control.Spec{MemberCount: 1, EtcdVersion: "3.6.16"},
			Member: in.ID, SpoolDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	take := func() backup.Meta { return takeInto(c.Store) }
	// takeDamaged damages a backup off to the side and then publishes it,
	// database first and meta last (a backup is listed by its meta): a
	// scheduled run never sees it intact or half rewritten.
	takeDamaged := func() backup.Meta {
		t.Helper()
		scratch, err := file.New(t.TempDir(), file.Options{})
		if err != nil {
			t.Fatal(err)
		}
		m := backuptest.DamageValue(t, scratch, c.Layout, takeInto(scratch))
		for _, key := range []string{m.Object, backup.MetaKey(c.Layout, m.Name)} {
			b, _, err := store.ReadAll(ctx, scratch, key)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Store.Put(ctx, key, bytes.NewReader(b), store.Condition{}); err != nil {
				t.Fatal(err)
			}
		}
		return m
	}
	status := func() *manager.VerifyStatus {
		s, err := in.M.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if s.Backups == nil || s.Backups.Verification == nil {
			t.Fatalf("status without verification: %+v", s.Backups)
		}
		return s.Backups.Verification
	}
	good := take()
	c.Eventually(60*time.Second, "the good backup verified", func() error {
		if v := status(); v.LastVerified == nil || v.LastVerified.Backup != good.Name || v.Last == nil || !v.Last.OK {
			return fmt.Errorf("verification status %+v", v)
		}
		return nil
	})
	if got := metric(t, reg, "etcd_manager_backup_last_verify_ok", nil); got != 1 {
		t.Errorf("last_verify_ok %v, want 1", got)
	}
	if got := metric(t, reg, "etcd_manager_backup_last_verified_timestamp_seconds", nil); got <= 0 {
		t.Errorf("last verified timestamp %v", got)
	}
	rec, err := backup.ReadVerification(ctx, c.Store, c.Layout, good.Name)
	if err != nil || !rec.OK || rec.Verifier != in.ID || rec.Trigger != "scheduled" || rec.HashKV != good.HashKV.Hash {
		t.Fatalf("verification record %+v, %v", rec, err)
	}

	// etcd-manager-ctl verify-backup runs the same verification from a
	// shell: human output and -o json.
	ctlArgs := func(cmd string, args ...string) []string {
		return append([]string{cmd, "--store", c.Store.URL(), "--cluster-name", c.Layout.Cluster, "--etcd-cluster", c.Layout.EtcdCluster,
			"--etcd-bin-dir-root", c.BinRoot, "--work-dir", t.TempDir()}, args...)
	}
	out, errs, code := runCtl(t, ctlArgs("verify-backup", good.Name)...)
	if code != 0 || !strings.Contains(out, "backup "+good.Name+": verified by a test restore with etcd 3.6.16") ||
		!strings.Contains(out, fmt.Sprintf("HashKV at revision %d: restored %d, meta %d", good.Revision, good.HashKV.Hash, good.HashKV.Hash)) {
		t.Fatalf("verify-backup of a good backup: %d %q %q", code, out, errs)
	}
	out, errs, code = runCtl(t, ctlArgs("verify-backup", "-o", "json", good.Name)...)
	var jv backup.Verification
	if code != 0 || json.Unmarshal([]byte(out), &jv) != nil || !jv.OK || jv.Backup != good.Name || jv.Verifier == "" {
		t.Fatalf("verify-backup -o json: %d %q %q", code, out, errs)
	}
	missing := "2020-01-01T00-00-00.000Z-full"
	if _, errs, code = runCtl(t, ctlArgs("verify-backup", missing)...); code == 0 || !strings.Contains(errs, store.JoinURL(c.Store.URL(), backup.MetaKey(c.Layout, missing))) {
		t.Fatalf("verify-backup of a missing backup: %d %q", code, errs)
	}

	c.Put("/registry/pods/after", "x") // a distinct revision for the second backup
	time.Sleep(5 * time.Millisecond)   // a distinct name (millisecond resolution)
	bad := takeDamaged()
	c.Eventually(60*time.Second, "the damaged backup caught", func() error {
		v := status()
		if v.Last == nil || v.Last.Backup != bad.Name || v.Last.OK {
			return fmt.Errorf("verification status %+v", v.Last)
		}
		return nil
	})
	v := status()
	if v.Last.Reason != backup.VerifyReasonMismatch || len(v.Last.Differences) == 0 || !strings.Contains(v.Last.Differences[0], "HashKV") {
		t.Fatalf("the damaged backup's result %+v", v.Last)
	}
	if v.LastVerified == nil || v.LastVerified.Backup != good.Name {
		t.Errorf("last verified %+v, want still %s", v.LastVerified, good.Name)
	}
	if got := metric(t, reg, "etcd_manager_backup_verify_failures_total", map[string]string{"reason": backup.VerifyReasonMismatch}); got < 1 {
		t.Errorf("mismatch failures %v", got)
	}
	if got := metric(t, reg, "etcd_manager_backup_last_verify_ok", nil); got != 0 {
		t.Errorf("last_verify_ok %v, want 0", got)
	}
	out, errs, code = runCtl(t, ctlArgs("verify-backup", bad.Name)...)
	if code == 0 || !strings.Contains(out, "VERIFICATION FAILED (mismatch)") || !strings.Contains(out, "DIFFERS: HashKV at revision") || !strings.Contains(errs, bad.Name) {
		t.Fatalf("verify-backup of the damaged backup: %d %q %q", code, out, errs)
	}
	// An object whose bytes changed is refused on its hash, named.
	time.Sleep(5 * time.Millisecond)
	flipped := take()
	raw, _, err := store.ReadAll(ctx, c.Store, flipped.Object)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/2] ^= 0xff
	if _, err := c.Store.Put(ctx, flipped.Object, bytes.NewReader(raw), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	if _, errs, code = runCtl(t, ctlArgs("verify-backup", flipped.Name)...); code == 0 || !strings.Contains(errs, store.JoinURL(c.Store.URL(), flipped.Object)) || !strings.Contains(errs, "sha256") {
		t.Fatalf("verify-backup of a changed object: %d %q", code, errs)
	}
	verified, err := backup.Verified(ctx, c.Store, c.Layout)
	if err != nil || !verified[good.Name] || verified[bad.Name] {
		t.Fatalf("Verified = %v, %v", verified, err)
	}
}
