package backup_test

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/etcd-manager/backup"
)

var t0 = time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)

// at is t0 plus s seconds.
func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// full is a full backup at rev, finished at second fin.
func full(rev int64, fin float64) backup.Meta {
	name := backup.NameAt(at(fin - 1))
	return backup.Meta{Name: name, Revision: rev, Started: at(fin - 1), Finished: at(fin), ClusterToken: "tok"}
}

// chain builds linked segments after base: each range [a,b] with its first
// and last event times (seconds) a+0.5 and b.
func chain(base backup.Meta, ranges ...[2]int64) []backup.SegmentMeta {
	var out []backup.SegmentMeta
	prev := backup.Link{LastRevision: base.Revision}
	for _, r := range ranges {
		name := backup.SegmentName(r[0], r[1])
		s := backup.SegmentMeta{
			Name: name, Kind: backup.KindDelta, FirstRevision: r[0], LastRevision: r[1], Events: r[1] - r[0] + 1,
			FirstEventTime: at(float64(r[0]) + 0.5), LastEventTime: at(float64(r[1])),
			StoredSHA256: sha(name), Prev: prev, Base: base.Name, ClusterToken: "tok",
			Writer: backup.Writer{LeaderID: "m1", LeaderTerm: 1}, Written: at(float64(r[1]) + 1),
		}
		out = append(out, s)
		prev = backup.Link{LastRevision: r[1], StoredSHA256: s.StoredSHA256, Segment: name}
	}
	return out
}

func kinds(ps []backup.Problem) string {
	var ks []string
	for _, p := range ps {
		ks = append(ks, p.Kind+"@"+p.Segment[len(p.Segment)-3:])
	}
	return strings.Join(ks, ",")
}

// TestCheckLinks: each defect is found and named by segment; a sound
// chain, and a new chain after a compaction break, have none.
func TestCheckLinks(t *testing.T) {
	f := full(100, 100)
	f2 := full(300, 300)
	sound := chain(f, [2]int64{101, 150}, [2]int64{151, 200}, [2]int64{201, 250})

	gap := append(chain(f, [2]int64{101, 150}), chain(f, [2]int64{151, 200}, [2]int64{211, 250})[1])

	dup := chain(f, [2]int64{101, 150}, [2]int64{151, 200})
	d := dup[1]
	d.Writer, d.StoredSHA256 = backup.Writer{LeaderID: "m2", LeaderTerm: 2}, sha("other")
	dup = append(dup, d)

	overlap := chain(f, [2]int64{101, 150}, [2]int64{151, 200})
	o := chain(f, [2]int64{101, 150}, [2]int64{151, 180})[1]
	o.Name, o.LastRevision, o.StoredSHA256 = backup.SegmentName(151, 190), 190, sha("o")
	overlap = append(overlap, o)

	broken := chain(f, [2]int64{101, 150}, [2]int64{151, 200})
	broken[1].Prev.StoredSHA256 = sha("not the previous one")

	newChain := append(chain(f, [2]int64{101, 150}), chain(f2, [2]int64{301, 350}, [2]int64{351, 400})...)
	missingBase := chain(full(500, 500), [2]int64{501, 550})

	for _, tc := range []struct {
		name  string
		fulls []backup.Meta
		segs  []backup.SegmentMeta
		want  string
	}{
		{"sound", []backup.Meta{f}, sound, ""},
		{"sound, any order", []backup.Meta{f}, []backup.SegmentMeta{sound[2], sound[0], sound[1]}, ""},
		{"gap", []backup.Meta{f}, gap, "gap@250"},
		{"duplicate across a hand-off", []backup.Meta{f}, dup, "duplicate@200"},
		{"overlap", []backup.Meta{f}, overlap, "overlap@200"},
		{"broken link", []backup.Meta{f}, broken, "broken-link@200"},
		{"new chain after a break", []backup.Meta{f, f2}, newChain, ""},
		{"missing base", []backup.Meta{f}, missingBase, "missing-base@550"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := backup.CheckLinks(tc.fulls, tc.segs)
			if kinds(got) != tc.want {
				t.Fatalf("problems %q, want %q: %v", kinds(got), tc.want, got)
			}
			for _, p := range got {
				if p.Detail == "" || !strings.Contains(p.String(), p.Segment) {
					t.Fatalf("problem %+v does not say what differed", p)
				}
			}
		})
	}
	// The duplicate names both writers.
	p := backup.CheckLinks([]backup.Meta{f}, dup)[0]
	if !strings.Contains(p.Detail, "m1 (term 1)") || !strings.Contains(p.Detail, "m2 (term 2)") {
		t.Fatalf("duplicate detail %q does not name both writers", p.Detail)
	}
	// The gap names the missing revisions.
	p = backup.CheckLinks([]backup.Meta{f}, gap)[0]
	if !strings.Contains(p.Detail, "revisions 151-210") {
		t.Fatalf("gap detail %q does not name revisions 151-210", p.Detail)
	}
}

// TestSegmentNames: names sort by revision and parse back; bad ones are
// refused with the expected form.
func TestSegmentNames(t *testing.T) {
	n := backup.SegmentName(9, 10)
	if n != "00000000000000000009-00000000000000000010" {
		t.Fatal(n)
	}
	if backup.SegmentName(9, 10) > backup.SegmentName(10, 11) {
		t.Fatal("names do not sort by revision")
	}
	a, b, err := backup.ParseSegmentName(n)
	if err != nil || a != 9 || b != 10 {
		t.Fatal(a, b, err)
	}
	for _, bad := range []string{"", "9-10", backup.SegmentName(10, 9), backup.SegmentName(0, 3), n + "x"} {
		if _, _, err := backup.ParseSegmentName(bad); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
}
