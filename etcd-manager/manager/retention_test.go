package manager_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/harness"
	"github.com/kopsnode/agents/etcd-manager/manager"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/s3"
	"github.com/kopsnode/agents/pkg/testtools"
)

// putOldBackup writes a backup as an earlier leader would have: a data
// object and a meta object, dated t.
func putOldBackup(t *testing.T, st store.Store, l control.Layout, at time.Time) string {
	t.Helper()
	name := backup.NameAt(at)
	m := backup.Meta{
		FormatVersion: backup.FormatVersion, Name: name, Kind: backup.KindFull, Object: backup.DataKey(l, name),
		Compression: backup.CompressionGzip, EtcdVersion: version, Revision: 1, KeyCount: 1,
		DBSize: 10, DBSHA256: strings.Repeat("ab", 32), StoredSize: 10, StoredSHA256: strings.Repeat("cd", 32),
		Started: at, Finished: at.Add(time.Second), Reason: "scheduled",
	}
	ctx := context.Background()
	if _, err := st.Put(ctx, m.Object, strings.NewReader("0123456789"), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(m)
	if _, err := st.Put(ctx, backup.MetaKey(l, name), bytes.NewReader(b), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	return name
}

// TestScheduledRetention runs one member whose leader backs up every 2 s
// into a versioned bucket on a real S3 server (MinIO) that already holds
// backups of earlier days. Retention (one per hour for 1 day, one per day
// for 3 days) runs after each backup: the backup of 5 days ago and the
// older of two in one hour go, every version of their objects with them;
// the newest of a day 2 days ago and of an hour 3 hours ago stay, and so
// do the new backups. With the store down, retention failures are
// counted and etcd keeps serving; with the store back, retention runs
// again.
func TestScheduledRetention(t *testing.T) {
	t.Parallel()
	mio := testtools.StartMinIO(t, testtools.MinIOOptions{Versioning: true})
	mio.CreateBucket(t, "backups", true)
	bst, err := s3.New(context.Background(), s3.Options{Bucket: "backups", Prefix: "etcd", Endpoint: mio.Endpoint, Region: mio.Region,
		PathStyle: true, AccessKey: mio.AccessKey, SecretKey: mio.SecretKey, RetryMaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bst.Close() })
	reg := prometheus.NewRegistry()
	c := harness.New(t, harness.Options{IPPrefix: "127.44.151", Versions: []string{version}, Mutate: func(cfg *manager.Config) {
		cfg.Backups.Interval = 2 * time.Second
		cfg.Backups.Store = bst
		cfg.Backups.Retention = backup.Policy{HourlyDays: 1, DailyDays: 3}
		cfg.Backups.RetentionInterval = time.Second
		cfg.MetricsRegistry = reg
	}})
	now := time.Now().UTC()
	oldest := putOldBackup(t, bst, c.Layout, now.Add(-5*24*time.Hour))
	h2 := now.Add(-50 * time.Hour).Truncate(time.Hour)
	day2old, day2new := putOldBackup(t, bst, c.Layout, h2.Add(5*time.Minute)), putOldBackup(t, bst, c.Layout, h2.Add(20*time.Minute))
	h3 := now.Add(-3 * time.Hour).Truncate(time.Hour)
	hourOld, hourNew := putOldBackup(t, bst, c.Layout, h3.Add(time.Minute)), putOldBackup(t, bst, c.Layout, h3.Add(3*time.Minute))
	// A second version of the oldest backup's objects: deleting it must
	// remove both.
	putOldBackup(t, bst, c.Layout, now.Add(-5*24*time.Hour))

	c.SetSpec(1, version)
	c.Start(1)
	c.WaitMembers(converge, "m1")
	c.Put("/retention", "kept")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	versions := func(name string) int {
		out, err := mio.Client().ListObjectVersions(ctx, &awss3.ListObjectVersionsInput{Bucket: aws.String("backups"), Prefix: aws.String("etcd/" + backup.FullPrefix(c.Layout) + name + "/")})
		if err != nil {
			t.Fatal(err)
		}
		return len(out.Versions) + len(out.DeleteMarkers)
	}
	var names []string
	c.Eventually(converge, "retention keeps the expected backups", func() error {
		ls, err := backup.List(ctx, bst, c.Layout)
		if err != nil {
			return err
		}
		names = names[:0]
		fresh := 0
		for _, m := range ls.Backups {
			names = append(names, m.Name)
			if m.Started.After(now) {
				fresh++
			}
		}
		for _, gone := range []string{oldest, day2old, hourOld} {
			if slices.Contains(names, gone) || versions(gone) != 0 {
				return fmt.Errorf("%s still there (%d versions); backups %v", gone, versions(gone), names)
			}
		}
		for _, kept := range []string{day2new, hourNew} {
			if !slices.Contains(names, kept) {
				return fmt.Errorf("%s deleted; backups %v", kept, names)
			}
		}
		if fresh < 2 {
			return fmt.Errorf("%d new backups, want 2 or more", fresh)
		}
		return nil
	})
	// What retention left of the delta chain still links up.
	if ls, err := backup.List(ctx, bst, c.Layout); err != nil {
		t.Fatal(err)
	} else if segs, err := backup.ListSegments(ctx, bst, c.Layout); err != nil {
		t.Fatal(err)
	} else if p := backup.CheckLinks(ls.Backups, segs.Segments); len(p) != 0 {
		t.Fatalf("after retention the delta chain has problems: %v", p)
	}
	if n := metric(t, reg, "etcd_manager_retention_deleted_total", map[string]string{"kind": "full"}); n != 3 {
		t.Fatalf("retention_deleted_total{kind=full} = %v, want 3", n)
	}
	st, _ := c.Instance("m1").M.Status(ctx)
	if r := st.Backups.Retention; r == nil || r.Deleted != 3 || r.LastError != "" || r.Policy.DailyDays != 3 || r.Kept < 4 {
		t.Fatalf("status retention %+v, want 3 deleted, no error, daily 3 days, 4 or more kept", r)
	}

	// The store goes away: retention fails and says so, etcd serves.
	failures := metric(t, reg, "etcd_manager_retention_failures_total", nil)
	mio.Kill(t)
	c.Eventually(converge, "retention failures counted", func() error {
		if n := metric(t, reg, "etcd_manager_retention_failures_total", nil); n <= failures {
			return fmt.Errorf("failures %v", n)
		}
		st, _ := c.Instance("m1").M.Status(ctx)
		if st.Backups.Retention.LastError == "" {
			return fmt.Errorf("no retention error in status")
		}
		return nil
	})
	c.Put("/during-outage", "yes")
	c.ExpectKey(converge, "/retention", "kept", "m1")
	mio.Restart(t)
	c.Eventually(converge, "retention runs again", func() error {
		st, _ := c.Instance("m1").M.Status(ctx)
		if r := st.Backups.Retention; r.LastError != "" {
			return fmt.Errorf("retention error %s", r.LastError)
		}
		return nil
	})
}
