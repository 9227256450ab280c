package backup_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/s3"
	"github.com/kopsnode/agents/pkg/testtools"
)

var simStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func fakeMeta(t time.Time, rev int64) backup.Meta {
	name := backup.NameAt(t)
	return backup.Meta{
		FormatVersion: backup.FormatVersion, Name: name, Kind: backup.KindFull, Object: backup.DataKey(layout, name),
		Compression: backup.CompressionGzip, EtcdVersion: "3.6.16", Revision: rev, KeyCount: 1,
		DBSize: 10, DBSHA256: strings.Repeat("ab", 32), StoredSize: 10, StoredSHA256: strings.Repeat("cd", 32),
		Started: t, Finished: t.Add(time.Second),
	}
}

func names(ms []backup.Meta) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	sort.Strings(out)
	return out
}

// TestRetainSimulatedDays takes a backup every 15 minutes for 100 simulated
// days, with a delta segment between each two, and applies retention after
// every backup (as the leader does after each good backup and hourly).
// What is left is exactly: the last hour, the newest of each hour of the
// last 7 days, the newest of each day of the last 90 days, the newest
// backup older than an hour (the point-in-time base), and the segments
// after that base.
func TestRetainSimulatedDays(t *testing.T) {
	p := backup.DefaultPolicy()
	var fulls []backup.Meta
	var segs []backup.SegmentRef
	var now time.Time
	const step = 15 * time.Minute
	n := 100 * 24 * 4
	for k := 0; k < n; k++ {
		now = simStart.Add(time.Duration(k) * step)
		rev := int64(1000 + 100*k)
		fulls = append(fulls, fakeMeta(now, rev))
		if k > 0 {
			segs = append(segs, backup.SegmentRef{Name: fmt.Sprintf("seg-%05d", k), FirstRevision: rev - 99, LastRevision: rev})
		}
		plan := backup.Retain(backup.Inventory{Fulls: fulls, Segments: segs}, now.Add(time.Minute), p)
		if plan.Protected != fulls[len(fulls)-1].Name {
			t.Fatalf("at %s the protected backup is %q, want the newest %s", now, plan.Protected, fulls[len(fulls)-1].Name)
		}
		del := map[string]bool{}
		for _, d := range plan.Delete {
			del[d] = true
		}
		fulls = slices.DeleteFunc(fulls, func(m backup.Meta) bool { return del[m.Name] })
		dseg := map[string]bool{}
		for _, s := range plan.DeleteSegments {
			dseg[s.Name] = true
		}
		segs = slices.DeleteFunc(segs, func(s backup.SegmentRef) bool { return dseg[s.Name] })
	}
	end := now.Add(time.Minute)
	var want []string
	var base time.Time
	for k := 0; k < n; k++ {
		bt := simStart.Add(time.Duration(k) * step)
		age := end.Sub(bt)
		if age >= time.Hour {
			base = bt
		}
		switch {
		case age < time.Hour,
			bt.Minute() == 45 && age < 7*24*time.Hour,
			bt.Hour() == 23 && bt.Minute() == 45 && age < 90*24*time.Hour:
			want = append(want, backup.NameAt(bt))
		}
	}
	if !slices.Contains(want, backup.NameAt(base)) {
		want = append(want, backup.NameAt(base))
	}
	sort.Strings(want)
	if got := names(fulls); !slices.Equal(got, want) {
		t.Fatalf("kept %d backups, want %d\n got %v\nwant %v", len(got), len(want), got, want)
	}
	// 4 recent + 7*24 hourly (one of which is the newest hour's, counted
	// in both) + 90 daily (7 of them hourly too): the figure the docs give.
	if len(want) < 250 || len(want) > 270 {
		t.Fatalf("kept %d backups; expected about 4 + 168 + 83", len(want))
	}
	baseRev := int64(1000 + 100*int(base.Sub(simStart)/step))
	for _, s := range segs {
		if s.LastRevision <= baseRev {
			t.Fatalf("segment %s (to revision %d) kept, but it ends at or before the point-in-time base (revision %d)", s.Name, s.LastRevision, baseRev)
		}
	}
	if wantSegs := int((end.Sub(base) - time.Minute) / step); len(segs) != wantSegs {
		t.Fatalf("kept %d segments, want %d (every one after the base at %s)", len(segs), wantSegs, base)
	}
}

// TestRetainProtectsNewestVerified: the newest verified backup is kept
// whatever its age, and the segments after it too, even when the policy
// would drop it; with nothing verified the newest backup is protected.
func TestRetainProtectsNewestVerified(t *testing.T) {
	now := simStart.Add(400 * 24 * time.Hour)
	old := fakeMeta(simStart, 100)                             // outside every window
	mid := fakeMeta(simStart.Add(24*time.Hour+time.Hour), 200) // same day as nothing else, also old
	newer := fakeMeta(now.Add(-2*time.Hour), 500)
	inv := backup.Inventory{
		Fulls:    []backup.Meta{old, mid, newer},
		Verified: map[string]bool{old.Name: true},
		Segments: []backup.SegmentRef{
			{Name: "s1", FirstRevision: 90, LastRevision: 100},
			{Name: "s2", FirstRevision: 101, LastRevision: 150},
			{Name: "s3", FirstRevision: 151, LastRevision: 600},
		},
	}
	plan := backup.Retain(inv, now, backup.Policy{HourlyDays: 1, DailyDays: 2})
	if plan.Protected != old.Name {
		t.Fatalf("protected %q, want the newest verified %s", plan.Protected, old.Name)
	}
	if !slices.Equal(plan.Delete, []string{mid.Name}) {
		t.Fatalf("delete %v, want only %s", plan.Delete, mid.Name)
	}
	if len(plan.DeleteSegments) != 1 || plan.DeleteSegments[0].Name != "s1" || plan.KeepSegments != 2 {
		t.Fatalf("segments: delete %v keep %d; want s1 deleted (ends at the protected revision 100), s2 and s3 kept", plan.DeleteSegments, plan.KeepSegments)
	}
	// Nothing verified: the newest is protected; the old ones go.
	inv.Verified = nil
	plan = backup.Retain(inv, now, backup.Policy{})
	if plan.Protected != newer.Name || !slices.Equal(plan.Delete, []string{old.Name, mid.Name}) {
		t.Fatalf("protected %q delete %v; want %s protected and the two old ones deleted", plan.Protected, plan.Delete, newer.Name)
	}
	// A backup dated in the future and a young incomplete one are kept;
	// an old incomplete one goes.
	future := fakeMeta(now.Add(time.Hour), 900)
	inv = backup.Inventory{Fulls: []backup.Meta{future, old}, Incomplete: []string{backup.NameAt(now.Add(-time.Hour)), backup.NameAt(now.Add(-48 * time.Hour))}}
	plan = backup.Retain(inv, now, backup.Policy{})
	if len(plan.Delete) != 0 {
		t.Fatalf("delete %v; want nothing (the future one is protected and kept, the old one is the point-in-time base)", plan.Delete)
	}
	if !slices.Equal(plan.DeleteIncomplete, []string{backup.NameAt(now.Add(-48 * time.Hour))}) {
		t.Fatalf("delete incomplete %v, want only the one from two days ago", plan.DeleteIncomplete)
	}
}

// TestRetainChainBaseAndTail: a kept segment that starts a chain keeps
// the full backup it continues; the newest segment is kept even when it
// ends before the point-in-time base (no writes since).
func TestRetainChainBaseAndTail(t *testing.T) {
	now := simStart.Add(400 * 24 * time.Hour)
	old := fakeMeta(simStart, 100)
	base := fakeMeta(now.Add(-2*time.Hour), 500)
	inv := backup.Inventory{
		Fulls:    []backup.Meta{old, base},
		Segments: []backup.SegmentRef{{Name: "start", FirstRevision: 101, LastRevision: 600, Base: old.Name}},
	}
	plan := backup.Retain(inv, now, backup.Policy{})
	if len(plan.Delete) != 0 || plan.KeepSegments != 1 {
		t.Fatalf("plan %+v; want %s kept as the base of the kept chain start", plan, old.Name)
	}
	inv = backup.Inventory{
		Fulls: []backup.Meta{old, base},
		Segments: []backup.SegmentRef{
			{Name: "a", FirstRevision: 101, LastRevision: 200, Base: old.Name},
			{Name: "tail", FirstRevision: 201, LastRevision: 300},
		},
	}
	plan = backup.Retain(inv, now, backup.Policy{})
	if len(plan.DeleteSegments) != 1 || plan.DeleteSegments[0].Name != "a" || !slices.Equal(plan.Delete, []string{old.Name}) {
		t.Fatalf("plan %+v; want segment a and %s deleted, the tail kept", plan, old.Name)
	}
}

func TestPolicyValidate(t *testing.T) {
	if err := backup.DefaultPolicy().Validate("backups.retention"); err != nil {
		t.Fatal(err)
	}
	err := backup.Policy{HourlyDays: -1, DailyDays: 4000}.Validate("backups.retention")
	if err == nil || !strings.Contains(err.Error(), "backups.retention.hourlyDays: -1") || !strings.Contains(err.Error(), "backups.retention.dailyDays: 4000") {
		t.Fatalf("got %v, want both fields named", err)
	}
}

// putFake writes a backup's data and meta objects as Take would.
func putFake(t *testing.T, st store.Store, m backup.Meta) {
	t.Helper()
	ctx := ctxT(t)
	if _, err := st.Put(ctx, m.Object, strings.NewReader("0123456789"), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, backup.MetaKey(layout, m.Name), bytes.NewReader(b), store.Condition{}); err != nil {
		t.Fatal(err)
	}
}

// recordingStore records the order of deletes.
type recordingStore struct {
	store.Store
	mu      sync.Mutex
	deletes []string
	failOn  string
}

func (r *recordingStore) Delete(ctx context.Context, key string) error {
	r.mu.Lock()
	r.deletes = append(r.deletes, key)
	r.mu.Unlock()
	if r.failOn != "" && strings.Contains(key, r.failOn) {
		return &store.Error{Op: "delete", URL: key, Err: fmt.Errorf("injected failure")}
	}
	return r.Store.Delete(ctx, key)
}

// TestApplyRetentionFileStore applies a plan to a file store: meta objects
// go before data objects, a failing delete leaves the backup incomplete
// (ignored by List) and does not stop the others, and the protected
// backup is never deleted.
func TestApplyRetentionFileStore(t *testing.T) {
	ctx := ctxT(t)
	rs := &recordingStore{Store: fileStore(t)}
	now := simStart.Add(30 * 24 * time.Hour)
	a, b, c := fakeMeta(simStart, 10), fakeMeta(simStart.Add(time.Hour), 20), fakeMeta(now.Add(-time.Minute), 30)
	for _, m := range []backup.Meta{a, b, c} {
		putFake(t, rs, m)
	}
	inv, invalid, err := backup.ReadInventory(ctx, rs, layout)
	if err != nil || len(invalid) != 0 || len(inv.Fulls) != 3 {
		t.Fatalf("inventory %+v invalid %v err %v", inv, invalid, err)
	}
	plan := backup.Retain(inv, now, backup.Policy{HourlyDays: 7, DailyDays: 7})
	if !slices.Equal(plan.Delete, []string{a.Name}) {
		// b is the point-in-time base (newest older than an hour).
		t.Fatalf("plan deletes %v, want %s", plan.Delete, a.Name)
	}
	rs.failOn = "never"
	res := backup.ApplyRetention(ctx, rs, layout, plan, nil)
	if res.Err != nil || res.DeletedFulls != 1 {
		t.Fatalf("apply: %+v", res)
	}
	if len(rs.deletes) != 3 || rs.deletes[0] != backup.MetaKey(layout, a.Name) || rs.deletes[1] != backup.DataKey(layout, a.Name) || rs.deletes[2] != backup.VerificationKey(layout, a.Name) {
		t.Fatalf("deletes %v, want the meta object, the data object, then the verification record of %s", rs.deletes, a.Name)
	}
	ls, err := backup.List(ctx, rs, layout)
	if err != nil || !slices.Equal(names(ls.Backups), []string{b.Name, c.Name}) || len(ls.Incomplete) != 0 {
		t.Fatalf("after retention: %+v %v", ls, err)
	}

	// The data delete fails: the backup is left incomplete, never with a
	// meta object pointing at missing data; the next pass finishes it
	// once it is old enough.
	rs.failOn, rs.deletes = "snapshot.db.gz", nil
	res = backup.ApplyRetention(ctx, rs, layout, backup.RetentionPlan{Delete: []string{b.Name}, Protected: c.Name}, nil)
	if res.Err == nil || !strings.Contains(res.Err.Error(), "injected failure") || !strings.Contains(res.Err.Error(), b.Name) {
		t.Fatalf("apply with a failing store: %+v", res)
	}
	ls, _ = backup.List(ctx, rs, layout)
	if !slices.Equal(ls.Incomplete, []string{b.Name}) || !slices.Equal(names(ls.Backups), []string{c.Name}) {
		t.Fatalf("after a failed data delete: %+v", ls)
	}
	rs.failOn = ""
	inv, _, _ = backup.ReadInventory(ctx, rs, layout)
	plan = backup.Retain(inv, now.Add(2*24*time.Hour), backup.Policy{HourlyDays: 7, DailyDays: 7})
	if !slices.Equal(plan.DeleteIncomplete, []string{b.Name}) {
		t.Fatalf("plan %+v, want the incomplete %s deleted", plan, b.Name)
	}
	if res := backup.ApplyRetention(ctx, rs, layout, plan, nil); res.Err != nil || res.DeletedIncomplete != 1 {
		t.Fatalf("apply: %+v", res)
	}
	// A passed test restore of b makes b the protected backup: c (newer,
	// not verified) may go, b may not; deleting a backup removes its
	// verification record.
	putFake(t, rs, b)
	if err := backup.WriteVerification(ctx, rs, layout, backup.Verification{Backup: b.Name, OK: true}); err != nil {
		t.Fatal(err)
	}
	inv, _, err = backup.ReadInventory(ctx, rs, layout)
	if err != nil || !inv.Verified[b.Name] || len(inv.Verified) != 1 {
		t.Fatalf("inventory verified %v (%v), want only %s", inv.Verified, err, b.Name)
	}
	if p, verified, _ := backup.Protected(inv.Fulls, inv.Verified); p.Name != b.Name || !verified {
		t.Fatalf("protected %s (verified %v), want %s", p.Name, verified, b.Name)
	}
	if err := backup.WriteVerification(ctx, rs, layout, backup.Verification{Backup: c.Name, OK: false}); err != nil {
		t.Fatal(err)
	}
	if err := backup.DeleteFull(ctx, rs, layout, c.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := backup.ReadVerification(ctx, rs, layout, c.Name); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the verification record of a deleted backup: %v, want not found", err)
	}
	putFake(t, rs, c)
	if err := backup.DeleteFull(ctx, rs, layout, b.Name); err != nil {
		t.Fatal(err)
	}
	// A plan that would delete the protected backup is refused whole.
	res = backup.ApplyRetention(ctx, rs, layout, backup.RetentionPlan{Delete: []string{c.Name}, Protected: c.Name}, nil)
	if res.Err == nil || res.DeletedFulls != 0 {
		t.Fatalf("a plan deleting the protected backup was applied: %+v", res)
	}
	if ls, _ := backup.List(ctx, rs, layout); !slices.Equal(names(ls.Backups), []string{c.Name}) || len(ls.Incomplete) != 0 {
		t.Fatalf("left %+v, want only %s", ls, c.Name)
	}
}

// TestDeleteFullVersionedMinIO: on a versioned bucket of a real S3 server
// (MinIO), deleting a backup leaves no version and no delete marker of
// its objects.
func TestDeleteFullVersionedMinIO(t *testing.T) {
	ctx := ctxT(t)
	m := testtools.StartMinIO(t, testtools.MinIOOptions{Versioning: true})
	m.CreateBucket(t, "versioned", true)
	st, err := s3.New(ctx, s3.Options{Bucket: "versioned", Prefix: "clusters", Endpoint: m.Endpoint, Region: m.Region,
		PathStyle: true, AccessKey: m.AccessKey, SecretKey: m.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	a, keep := fakeMeta(simStart, 10), fakeMeta(simStart.Add(time.Hour), 20)
	putFake(t, st, a)
	putFake(t, st, a) // a second version of each object
	putFake(t, st, keep)
	versions := func(name string) int {
		out, err := m.Client().ListObjectVersions(ctx, &awss3.ListObjectVersionsInput{Bucket: aws.String("versioned"), Prefix: aws.String("clusters/" + backup.FullPrefix(layout) + name + "/")})
		if err != nil {
			t.Fatal(err)
		}
		return len(out.Versions) + len(out.DeleteMarkers)
	}
	if n := versions(a.Name); n != 4 {
		t.Fatalf("%d versions before the delete, want 4 (is versioning on?)", n)
	}
	if err := backup.DeleteFull(ctx, st, layout, a.Name); err != nil {
		t.Fatal(err)
	}
	if n := versions(a.Name); n != 0 {
		t.Fatalf("%d versions or delete markers left of %s, want 0", n, a.Name)
	}
	if n := versions(keep.Name); n != 2 {
		t.Fatalf("the other backup has %d versions, want 2", n)
	}
}
