package backup_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/kopsnode/agents/etcd-manager/backup"
)

func segNames(segs []backup.SegmentMeta) string {
	var out []string
	for _, s := range segs {
		a, b, _ := backup.ParseSegmentName(s.Name)
		out = append(out, fmt.Sprintf("%d-%d", a, b))
	}
	return strings.Join(out, " ")
}

// TestPlanRestore: the newest full backup at or before the target and the
// linked segments after it up to the target; targets outside every range
// are refused naming the ranges.
func TestPlanRestore(t *testing.T) {
	fA := full(100, 100)
	fB := full(175, 176) // taken while the chain went on
	fC := full(400, 400) // a new chain after a compaction break
	segs := append(chain(fA, [2]int64{101, 150}, [2]int64{151, 200}, [2]int64{201, 250}), chain(fC, [2]int64{401, 450})...)
	fulls := []backup.Meta{fC, fA, fB}
	// A fork: a second writer's segment after 150 that nothing follows.
	fork := chain(fA, [2]int64{101, 150}, [2]int64{151, 160})[1]
	fork.StoredSHA256 = sha("fork")
	withFork := append(append([]backup.SegmentMeta(nil), segs...), fork)

	for _, tc := range []struct {
		name     string
		segs     []backup.SegmentMeta
		target   backup.Target
		base     int64
		want     string
		rev      int64
		timeSet  bool
		errParts []string
	}{
		{"latest", segs, backup.Target{Latest: true}, 400, "401-450", 450, false, nil},
		{"revision inside the first chain", segs, backup.Target{Revision: 160}, 100, "101-150 151-200", 160, false, nil},
		{"revision after a newer full", segs, backup.Target{Revision: 230}, 175, "151-200 201-250", 230, false, nil},
		{"revision of a full itself", segs, backup.Target{Revision: 175}, 175, "", 175, false, nil},
		{"revision in the second chain", segs, backup.Target{Revision: 420}, 400, "401-450", 420, false, nil},
		{"fork: the path that goes on", withFork, backup.Target{Revision: 230}, 175, "151-200 201-250", 230, false, nil},
		{"revision in the break", segs, backup.Target{Revision: 300}, 0, "", 0, false, []string{"revision 300", "revisions 100", "to 250", "revisions 400"}},
		{"revision before every full", segs, backup.Target{Revision: 50}, 0, "", 0, false, []string{"revision 50"}},
		{"revision after the last", segs, backup.Target{Revision: 451}, 0, "", 0, false, []string{"to 450"}},
		{"time inside a segment", segs, backup.Target{Time: at(160)}, 100, "101-150 151-200", 200, true, nil},
		{"time after a newer full", segs, backup.Target{Time: at(210.7)}, 175, "151-200 201-250", 250, true, nil},
		{"time after the last durable event", segs, backup.Target{Time: at(451)}, 0, "", 0, true, []string{"time", "recoverable"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := backup.PlanRestore(fulls, tc.segs, tc.target)
			if tc.errParts != nil {
				if err == nil || !errors.Is(err, backup.ErrOutOfRange) {
					t.Fatalf("plan %+v, err %v; want out of range", p, err)
				}
				for _, part := range tc.errParts {
					if !strings.Contains(err.Error(), part) {
						t.Fatalf("error %q does not contain %q", err, part)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Base.Revision != tc.base || p.TargetRevision != tc.rev || (tc.want != "" && segNames(p.Segments) != tc.want) || p.TargetTime.IsZero() == tc.timeSet {
				t.Fatalf("plan: base %d, segments %q, target %d, time %v; want base %d, segments %q, target %d", p.Base.Revision, segNames(p.Segments), p.TargetRevision, p.TargetTime, tc.base, tc.want, tc.rev)
			}
			for i := 1; i < len(p.Segments); i++ {
				if p.Segments[i].Prev.StoredSHA256 != p.Segments[i-1].StoredSHA256 {
					t.Fatalf("segment %s does not link to %s", p.Segments[i].Name, p.Segments[i-1].Name)
				}
			}
		})
	}
	// With the fork, the plan follows the linked path that reaches 230.
	p, err := backup.PlanRestore([]backup.Meta{fA}, withFork, backup.Target{Revision: 230})
	if err != nil || segNames(p.Segments) != "101-150 151-200 201-250" {
		t.Fatalf("fork: %q, %v", segNames(p.Segments), err)
	}
	if _, err := backup.PlanRestore(nil, segs, backup.Target{Latest: true}); !errors.Is(err, backup.ErrOutOfRange) {
		t.Fatalf("no full backup: %v", err)
	}
	if _, err := backup.PlanRestore(fulls, segs, backup.Target{Latest: true, Revision: 3}); err == nil {
		t.Fatal("two targets accepted")
	}
}

// TestRecoverableRanges: one range per chain, merged across full backups
// inside it, with the full's finish and the last event's time.
func TestRecoverableRanges(t *testing.T) {
	fA, fB, fC := full(100, 100), full(175, 176), full(400, 400)
	segs := append(chain(fA, [2]int64{101, 150}, [2]int64{151, 200}, [2]int64{201, 250}), chain(fC, [2]int64{401, 450})...)
	rs := backup.RecoverableRanges([]backup.Meta{fC, fB, fA}, segs)
	if len(rs) != 2 {
		t.Fatalf("%d ranges: %v", len(rs), rs)
	}
	want := []backup.Range{
		{From: backup.Point{Revision: 100, Time: at(100)}, To: backup.Point{Revision: 250, Time: at(250)}, Base: fA.Name},
		{From: backup.Point{Revision: 400, Time: at(400)}, To: backup.Point{Revision: 450, Time: at(450)}, Base: fC.Name},
	}
	for i := range want {
		if rs[i].From.Revision != want[i].From.Revision || !rs[i].From.Time.Equal(want[i].From.Time) || rs[i].To.Revision != want[i].To.Revision ||
			!rs[i].To.Time.Equal(want[i].To.Time) || rs[i].Base != want[i].Base {
			t.Fatalf("range %d: %+v, want %+v", i, rs[i], want[i])
		}
	}
	if rs := backup.RecoverableRanges(nil, segs); len(rs) != 0 {
		t.Fatalf("ranges without a full backup: %v", rs)
	}
}
