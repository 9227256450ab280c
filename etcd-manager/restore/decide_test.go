package restore

import (
	"reflect"
	"strings"
	"testing"

	"github.com/kopsnode/agents/etcd-manager/control"
)

func testState(phase Phase) State {
	return State{
		FormatVersion: FormatVersion, CommandID: "c1", Kind: control.KindRestoreBackup, Phase: phase,
		Backup: "2026-11-30T10-15-00.000Z-full", NewClusterToken: "new", EtcdVersion: "3.6.16",
		Members: []control.Member{{Name: "m1", PeerURLs: []string{"https://a:2380"}}, {Name: "m2", PeerURLs: []string{"https://b:2380"}}, {Name: "m3", PeerURLs: []string{"https://c:2380"}}},
	}
}

func all(o MemberObs) map[string]MemberObs {
	return map[string]MemberObs{"m1": o, "m2": o, "m3": o}
}

func TestNext(t *testing.T) {
	quarantined := MemberObs{Reachable: true, CommandID: "c1", Step: StepQuarantined, Token: "new", Healthy: true}
	open := MemberObs{Reachable: true, CommandID: "c1", Step: StepOpen, Token: "new", Healthy: true}
	old := MemberObs{Reachable: true, Token: "old", Healthy: true}
	withSegments := testState(PhaseRestoring)
	withSegments.Segments = []string{"s1"}
	for _, tc := range []struct {
		name  string
		s     State
		obs   map[string]MemberObs
		want  Action
		extra string // a substring of the reason
	}{
		{name: "validating", s: testState(PhaseValidating), obs: all(old), want: Action{Kind: ActValidate}},
		{name: "restoring: every old member is told", s: testState(PhaseRestoring), obs: all(old),
			want: Action{Kind: ActSend, Members: []string{"m1", "m2", "m3"}, Request: RequestRestore}},
		{name: "restoring: a member of an earlier restore is told again", s: testState(PhaseRestoring),
			obs:  map[string]MemberObs{"m1": quarantined, "m2": {Reachable: true, CommandID: "c0", Step: StepOpen, Token: "x", Healthy: true}, "m3": quarantined},
			want: Action{Kind: ActSend, Members: []string{"m2"}, Request: RequestRestore}},
		{name: "restoring: an unreachable member is waited for", s: testState(PhaseRestoring),
			obs: map[string]MemberObs{"m1": quarantined, "m2": quarantined}, want: Action{Kind: ActWait}, extra: "m3 (unreachable)"},
		{name: "restoring: a member at work is waited for", s: testState(PhaseRestoring),
			obs:  map[string]MemberObs{"m1": quarantined, "m2": quarantined, "m3": {Reachable: true, CommandID: "c1", Step: StepRestoring}},
			want: Action{Kind: ActWait}, extra: "m3 (restoring)"},
		{name: "restoring: quarantined but no quorum yet", s: testState(PhaseRestoring),
			obs: all(MemberObs{Reachable: true, CommandID: "c1", Step: StepQuarantined, Token: "new"}), want: Action{Kind: ActWait}, extra: "healthy false"},
		{name: "restoring: a failed member rolls the restore back", s: testState(PhaseRestoring),
			obs:  map[string]MemberObs{"m1": quarantined, "m2": {Reachable: true, CommandID: "c1", Step: StepFailed, Error: "disk full"}, "m3": quarantined},
			want: Action{Kind: ActRollback}, extra: "member m2 could not restore: disk full"},
		{name: "restoring: all quarantined, no deltas", s: testState(PhaseRestoring), obs: all(quarantined),
			want: Action{Kind: ActAdvance, To: PhaseClearing}},
		{name: "restoring: all quarantined, deltas", s: withSegments, obs: all(quarantined),
			want: Action{Kind: ActAdvance, To: PhaseReplaying}},
		{name: "replaying", s: testState(PhaseReplaying), obs: all(quarantined), want: Action{Kind: ActReplay}},
		{name: "clearing", s: testState(PhaseClearing), obs: all(quarantined), want: Action{Kind: ActClear}},
		{name: "opening: quarantined members are opened one at a time", s: testState(PhaseOpening),
			obs:  map[string]MemberObs{"m1": open, "m2": quarantined, "m3": quarantined},
			want: Action{Kind: ActSend, Members: []string{"m2"}, Request: RequestOpen}},
		{name: "opening: the next waits until the opened one is healthy", s: testState(PhaseOpening),
			obs:  map[string]MemberObs{"m1": {Reachable: true, CommandID: "c1", Step: StepOpen, Token: "new"}, "m2": quarantined, "m3": quarantined},
			want: Action{Kind: ActWait}, extra: "m1 (open, healthy false)"},
		{name: "opening: an open member without quorum is waited for", s: testState(PhaseOpening),
			obs:  map[string]MemberObs{"m1": open, "m2": open, "m3": {Reachable: true, CommandID: "c1", Step: StepOpen, Token: "new"}},
			want: Action{Kind: ActWait}, extra: "m3"},
		{name: "opening: all open and healthy", s: testState(PhaseOpening), obs: all(open), want: Action{Kind: ActFinish}},
		{name: "rolling back: touched members are told", s: testState(PhaseRollingBack),
			obs:  map[string]MemberObs{"m1": quarantined, "m2": {Reachable: true, CommandID: "c1", Step: StepFailed}, "m3": old},
			want: Action{Kind: ActSend, Members: []string{"m1", "m2"}, Request: RequestRollback}},
		{name: "rolling back: done", s: testState(PhaseRollingBack),
			obs:  map[string]MemberObs{"m1": {Reachable: true, CommandID: "c1", Step: StepRolledBack}, "m2": {Reachable: true, CommandID: "c1", Step: StepRolledBack}, "m3": old},
			want: Action{Kind: ActFail}},
		{name: "rolling back: unreachable", s: testState(PhaseRollingBack), obs: map[string]MemberObs{"m1": old, "m2": old},
			want: Action{Kind: ActWait}, extra: "m3 (unreachable)"},
		{name: "done", s: testState(PhaseDone), obs: all(open), want: Action{Kind: ActNone}},
		{name: "failed", s: testState(PhaseFailed), obs: all(old), want: Action{Kind: ActNone}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Next(tc.s, tc.obs)
			reason := got.Reason
			got.Reason = ""
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Next = %+v (reason %q), want %+v", got, reason, tc.want)
			}
			if !strings.Contains(reason, tc.extra) {
				t.Fatalf("reason %q does not say %q", reason, tc.extra)
			}
		})
	}
}

func TestChooseMembers(t *testing.T) {
	u := []string{"https://x:2380"}
	cands := []Candidate{
		{ID: "m4", PeerURLs: u, Idle: true},
		{ID: "m3", PeerURLs: u, Token: "old"},
		{ID: "m1", PeerURLs: u, Token: "old"},
		{ID: "m0", PeerURLs: u, Token: "other"},
		{ID: "m2", PeerURLs: u, Idle: true},
	}
	got, err := ChooseMembers(3, "old", cands)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range got {
		ids = append(ids, c.ID)
	}
	if strings.Join(ids, ",") != "m1,m3,m2" {
		t.Fatalf("chose %v, want the old members m1, m3 first, then the idle m2", ids)
	}
	if _, err := ChooseMembers(5, "old", cands); err == nil || !strings.Contains(err.Error(), "needs 5 members reachable") || !strings.Contains(err.Error(), "m0") {
		t.Fatalf("5 of 4 usable: err %v", err)
	}
}

func TestBumpAndVersions(t *testing.T) {
	if got := Bump(5000, 1000); got != 4000+BumpMargin {
		t.Fatalf("Bump(5000, 1000) = %d", got)
	}
	if got := Bump(0, 1000); got != UnknownBump {
		t.Fatalf("Bump(unknown) = %d", got)
	}
	if got := Bump(900, 1000); got != BumpMargin {
		t.Fatalf("Bump(older cluster) = %d", got)
	}
	for _, tc := range []struct {
		b, c string
		ok   bool
	}{{"3.5.21", "3.6.16", true}, {"3.6.16", "3.6.1", true}, {"3.7.3", "3.6.16", false}, {"", "3.6.16", false}} {
		err := CheckVersion("b1", tc.b, tc.c)
		if (err == nil) != tc.ok {
			t.Errorf("CheckVersion(%s, %s) = %v", tc.b, tc.c, err)
		}
	}
}

func TestTargets(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Target
		err  string
	}{
		{in: "12345", want: Target{Revision: 12345}},
		{in: "2026-11-30T10:15:00Z", want: Target{Time: mustTime(t, "2026-11-30T10:15:00Z")}},
		{in: "0", err: "not positive"},
		{in: "yesterday", err: "neither a revision nor an RFC 3339 time"},
		{in: "", err: "needs a TIME"},
	} {
		got, err := ParseTo(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseTo(%q) = %v, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseTo(%q) = %v, %v", tc.in, got, err)
		}
		// The command round-trips the target.
		back, err := TargetOf(control.Command{ID: "c", Kind: got.Kind(), Args: got.Args()})
		if err != nil || !reflect.DeepEqual(back, got) {
			t.Errorf("TargetOf(args of %v) = %v, %v", got, back, err)
		}
	}
	b := Target{Backup: "2026-11-30T10-15-00.000Z-full"}
	if back, err := TargetOf(control.Command{ID: "c", Kind: b.Kind(), Args: b.Args()}); err != nil || back != b {
		t.Fatalf("backup target: %v, %v", back, err)
	}
	for _, c := range []control.Command{
		{ID: "c", Kind: control.KindRestoreBackup, Args: map[string]string{"backup": "latest"}},
		{ID: "c", Kind: control.KindRestoreTo, Args: map[string]string{"revision": "-3"}},
		{ID: "c", Kind: control.KindRestoreTo, Args: map[string]string{"when": "x"}},
		{ID: "c", Kind: "backup-now"},
	} {
		if _, err := TargetOf(c); err == nil || !strings.Contains(err.Error(), "command c") {
			t.Errorf("TargetOf(%+v) = %v; want an error naming the command", c, err)
		}
	}
}
