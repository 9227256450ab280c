package quorum

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/store/file"
)

func TestMakePlan(t *testing.T) {
	const tok = "etcd-1"
	bk := &backup.Meta{Name: "2026-11-30T10-00-00.000Z-full", Revision: 40, Started: time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)}
	a := Report{ID: "a", ClusterToken: tok, RaftIndex: 90, Revision: 50}
	b := Report{ID: "b", ClusterToken: tok, RaftIndex: 120, Revision: 60}
	bTie := Report{ID: "b", ClusterToken: tok, RaftIndex: 90, Revision: 55}
	idle := Report{ID: "c", DataDirEmpty: true}
	other := Report{ID: "d", ClusterToken: "etcd-old", RaftIndex: 500}
	healthy := Report{ID: "e", ClusterToken: tok, Healthy: true}
	cases := []struct {
		name    string
		members int
		reports []Report
		newest  *backup.Meta
		choice  Choice
		lost    bool
		source  string
		member  string
		backup  string
		err     string
		discard string
	}{
		{name: "highest raft index wins", members: 3, reports: []Report{a, b, idle}, newest: bk, lost: true, source: SourceMember, member: "b", discard: "the data of surviving member a"},
		{name: "revision breaks a tie", members: 5, reports: []Report{a, bTie}, lost: true, source: SourceMember, member: "b"},
		{name: "another cluster's data does not count", members: 3, reports: []Report{other, idle}, newest: bk, lost: true, source: SourceBackup, backup: bk.Name, discard: "every write after revision 40"},
		{name: "nothing to recover from", members: 3, reports: []Report{idle}, lost: true, source: SourceNone},
		{name: "a quorum is healthy", members: 3, reports: []Report{healthy, {ID: "f", ClusterToken: tok, Healthy: true}}, lost: false, source: SourceMember, member: "e"},
		{name: "chosen member", members: 3, reports: []Report{a, b}, choice: Choice{Member: "a"}, lost: true, source: SourceMember, member: "a"},
		{name: "chosen member without data", members: 3, reports: []Report{a, idle}, choice: Choice{Member: "c"}, err: "member c is not a surviving member holding the cluster's data (survivors with data: a)"},
		{name: "chosen backup", members: 3, reports: []Report{a}, newest: bk, choice: Choice{Backup: bk.Name}, lost: true, source: SourceBackup, backup: bk.Name, discard: "the data of surviving member a"},
		{name: "unknown backup", members: 3, reports: []Report{a}, newest: bk, choice: Choice{Backup: "x"}, err: "backup x was not found"},
		{name: "both", members: 3, choice: Choice{Member: "a", Backup: "x"}, err: "not both"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := MakePlan(c.members, tok, c.reports, c.newest, c.choice)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Lost != c.lost || p.Source != c.source || p.Member != c.member || p.Backup != c.backup {
				t.Fatalf("plan %+v; want lost %v source %s member %q backup %q", p, c.lost, c.source, c.member, c.backup)
			}
			if c.discard != "" && !strings.Contains(strings.Join(p.Discards, "\n"), c.discard) {
				t.Fatalf("discards %q lack %q", p.Discards, c.discard)
			}
			if p.Source == SourceNone && p.Reason == "" {
				t.Fatal("no reason for no source")
			}
		})
	}
}

func TestReports(t *testing.T) {
	st, err := file.New(t.TempDir(), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l := control.Layout{Cluster: "c", EtcdCluster: "main"}
	ctx := context.Background()
	now := time.Now().UTC()
	for _, r := range []Report{{ID: "old", Observed: now.Add(-time.Hour)}, {ID: "fresh", Observed: now, RaftIndex: 7}} {
		if err := WriteReport(ctx, st, l, r); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := ReadReports(ctx, st, l, now.Add(-time.Minute))
	if err != nil || len(rs) != 1 || rs[0].ID != "fresh" || rs[0].RaftIndex != 7 {
		t.Fatalf("reports %+v %v, want only the fresh one", rs, err)
	}
	if err := DeleteReport(ctx, st, l, "fresh"); err != nil {
		t.Fatal(err)
	}
	if rs, err := ReadReports(ctx, st, l, time.Time{}); err != nil || len(rs) != 1 || rs[0].ID != "old" {
		t.Fatalf("after delete: %+v %v", rs, err)
	}
}
