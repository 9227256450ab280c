package manager

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/peer"
)

const (
	decideToken = "etcd-0123456789abcdef"
	decideVer   = "3.6.16"
)

var decideNow = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

var decideCfg = decideConfig{
	DeadMemberThreshold: 5 * time.Minute,
	RenewBefore:         60 * 24 * time.Hour,
	CreateGrace:         12 * time.Second,
	CreatedKey:          "c/main/control/created",
}

func peerURL(id string) string { return "https://etcd-" + id + ":2380" }

// memberIDOf gives instance mN etcd member ID 0x100+N.
func memberIDOf(id string) uint64 {
	n, _ := strconv.Atoi(strings.TrimPrefix(id, "m"))
	return uint64(0x100 + n)
}

// idleInfo is a reachable instance with no etcd and an empty disk.
func idleInfo(id string) peer.Info {
	return peer.Info{ID: id, PeerURLs: []string{peerURL(id)}, DataDirEmpty: true}
}

// memberInfo is a reachable, healthy voter of the cluster.
func memberInfo(id string) peer.Info {
	return peer.Info{ID: id, PeerURLs: []string{peerURL(id)}, ClientURLs: []string{"https://etcd-" + id + ":4001"},
		ClusterToken: decideToken, EtcdRunning: true, EtcdHealthy: true, EtcdVersion: decideVer,
		MemberID: strconv.FormatUint(memberIDOf(id), 16), CertNotAfter: decideNow.Add(300 * 24 * time.Hour)}
}

// downInfo is a reachable member instance whose etcd does not answer.
func downInfo(id string) peer.Info {
	i := memberInfo(id)
	i.EtcdRunning, i.EtcdHealthy, i.MemberID, i.EtcdVersion = false, false, "", ""
	return i
}

func voter(id string) *etcdserverpb.Member {
	return &etcdserverpb.Member{ID: memberIDOf(id), Name: id, PeerURLs: []string{peerURL(id)}}
}

// learner is a learner that has not started (no name yet).
func learner(id string) *etcdserverpb.Member {
	return &etcdserverpb.Member{ID: memberIDOf(id), PeerURLs: []string{peerURL(id)}, IsLearner: true}
}

func infos(is ...peer.Info) map[string]peer.Info {
	out := map[string]peer.Info{}
	for _, i := range is {
		out[i.ID] = i
	}
	return out
}

func members(ms ...*etcdserverpb.Member) []*etcdserverpb.Member { return ms }

// unhealthyFor says member ids have been unhealthy for d at decideNow.
func unhealthyFor(d time.Duration, ids ...string) map[string]time.Time {
	out := map[string]time.Time{}
	for _, id := range ids {
		out[strconv.FormatUint(memberIDOf(id), 16)] = decideNow.Add(-d)
	}
	return out
}

// running is an observation of a created, answering cluster led by m1.
func running(is map[string]peer.Info, ms []*etcdserverpb.Member, unhealthy map[string]time.Time) Observation {
	return Observation{
		Self: "m1", Infos: is, Created: &control.Created{ClusterToken: decideToken, EtcdVersion: decideVer},
		Bootstrapped: true, Listed: true, Members: ms, UnhealthySince: unhealthy,
		LeaderSince: decideNow.Add(-time.Hour), Binaries: map[string]error{decideVer: nil},
	}
}

// fresh is an observation with no created marker, m1 leader since ago.
func fresh(ago time.Duration, is ...peer.Info) Observation {
	return Observation{Self: "m1", Infos: infos(is...), LeaderSince: decideNow.Add(-ago), Binaries: map[string]error{decideVer: nil}}
}

func spec(n int) control.Spec { return control.Spec{MemberCount: n, EtcdVersion: decideVer} }

func TestDecide(t *testing.T) {
	errNoBinary := errors.New("etcd 3.6.16 is not installed: /opt/etcd/v3.6.16/etcd: no such file")
	noBinary := func(o Observation) Observation {
		o.Binaries = map[string]error{decideVer: errNoBinary}
		return o
	}
	three := members(voter("m1"), voter("m2"), voter("m3"))
	for _, tc := range []struct {
		name string
		obs  Observation
		spec control.Spec
		// want is the action; target and member the instance and etcd
		// member acted on; errHas a piece of the refusal or warning.
		want   Action
		target string
		member uint64
		errHas string
		// check inspects the decision further.
		check func(t *testing.T, d Decision)
	}{
		// Creation.
		{name: "create at full size at once", obs: fresh(0, idleInfo("m1"), idleInfo("m2"), idleInfo("m3")), spec: spec(3), want: ActCreate,
			check: func(t *testing.T, d Decision) {
				if len(d.Members) != 3 || d.Members[0].Name != "m1" || d.Members[2].PeerURLs[0] != peerURL("m3") || d.Version != decideVer {
					t.Errorf("members %+v version %s", d.Members, d.Version)
				}
			}},
		{name: "quorum waits inside the grace", obs: fresh(11*time.Second, idleInfo("m1"), idleInfo("m2")), spec: spec(3), want: ActWait},
		{name: "quorum creates after the grace", obs: fresh(12*time.Second, idleInfo("m1"), idleInfo("m2")), spec: spec(3), want: ActCreate,
			check: func(t *testing.T, d Decision) {
				if len(d.Members) != 2 {
					t.Errorf("created with %d members, want the 2 here", len(d.Members))
				}
			}},
		{name: "below quorum never creates", obs: fresh(time.Hour, idleInfo("m1")), spec: spec(3), want: ActWait},
		{name: "more idle peers than the spec: the lowest IDs", obs: fresh(0, idleInfo("m3"), idleInfo("m1"), idleInfo("m2")), spec: spec(1), want: ActCreate,
			check: func(t *testing.T, d Decision) {
				if len(d.Members) != 1 || d.Members[0].Name != "m1" {
					t.Errorf("members %+v, want m1 only", d.Members)
				}
			}},
		{name: "peer with data refuses creation", obs: fresh(0, idleInfo("m1"), func() peer.Info { i := idleInfo("m2"); i.DataDirEmpty = false; return i }(), idleInfo("m3")),
			spec: spec(3), want: ActRefuse, errHas: "peer m2 holds etcd data"},
		{name: "peer with a token refuses creation", obs: fresh(0, idleInfo("m1"), downInfo("m2")), spec: spec(1), want: ActRefuse, errHas: "c/main/control/created is absent"},
		{name: "uninstalled version refuses creation", obs: noBinary(fresh(0, idleInfo("m1"))), spec: spec(1), want: ActRefuse, errHas: "cannot create cluster: etcd 3.6.16 is not installed"},
		{name: "version never checked refuses creation", obs: fresh(0, idleInfo("m1")), spec: control.Spec{MemberCount: 1, EtcdVersion: "3.7.3"}, want: ActRefuse, errHas: "not checked"},

		// Created, no healthy member.
		{name: "creator died half way: re-send joins", obs: Observation{Self: "m1", Infos: infos(idleInfo("m1")), Created: &control.Created{ClusterToken: decideToken}}, spec: spec(3), want: ActResendJoins},
		{name: "bootstrapped cluster down: wait for restarts", obs: Observation{Self: "m1", Infos: infos(downInfo("m1")), Created: &control.Created{ClusterToken: decideToken}, Bootstrapped: true},
			spec: spec(3), want: ActRefuse, errHas: "waiting for members to restart"},

		// Stray peers.
		{name: "peer of an older cluster leaves", obs: running(infos(memberInfo("m1"), memberInfo("m2"), memberInfo("m3"), func() peer.Info { i := downInfo("m4"); i.ClusterToken = "etcd-old"; return i }()), three, nil),
			spec: spec(3), want: ActLeave, target: "m4", check: func(t *testing.T, d Decision) {
				if d.Token != "etcd-old" {
					t.Errorf("token %q", d.Token)
				}
			}},
		{name: "removed member leaves", obs: running(infos(memberInfo("m1"), memberInfo("m2"), memberInfo("m3")), members(voter("m1"), voter("m2")), nil),
			spec: spec(2), want: ActLeave, target: "m3"},

		// Learners.
		{name: "idle learner gets its join again", obs: running(infos(memberInfo("m1"), memberInfo("m2"), idleInfo("m3")), members(voter("m1"), voter("m2"), learner("m3")), nil),
			spec: spec(3), want: ActJoinLearner, target: "m3", member: memberIDOf("m3"), check: func(t *testing.T, d Decision) {
				want := "m1=" + peerURL("m1") + ",m2=" + peerURL("m2") + ",m3=" + peerURL("m3")
				if d.InitialCluster != want || d.Version != decideVer {
					t.Errorf("initial cluster %q version %q, want %q", d.InitialCluster, d.Version, want)
				}
			}},
		{name: "running learner is promoted", obs: running(infos(memberInfo("m1"), memberInfo("m2"), func() peer.Info { i := memberInfo("m3"); i.EtcdLearner = true; return i }()),
			members(voter("m1"), voter("m2"), func() *etcdserverpb.Member { l := learner("m3"); l.Name = "m3"; return l }()), nil),
			spec: spec(3), want: ActPromote, target: "m3", member: memberIDOf("m3")},
		{name: "unreachable learner waits inside the threshold", obs: running(infos(memberInfo("m1"), memberInfo("m2")), members(voter("m1"), voter("m2"), learner("m3")), unhealthyFor(5*time.Minute, "m3")),
			spec: spec(3), want: ActWait, member: memberIDOf("m3")},
		{name: "unreachable learner removed past the threshold", obs: running(infos(memberInfo("m1"), memberInfo("m2")), members(voter("m1"), voter("m2"), learner("m3")), unhealthyFor(5*time.Minute+time.Second, "m3")),
			spec: spec(3), want: ActRemove, member: memberIDOf("m3")},

		// Replaced machines (same identity, empty disk).
		{name: "replaced member removed", obs: running(infos(memberInfo("m1"), memberInfo("m2"), idleInfo("m3")), three, unhealthyFor(time.Second, "m3")),
			spec: spec(3), want: ActRemove, target: "m3", member: memberIDOf("m3")},
		{name: "replaced member kept when removal would lose quorum", obs: running(infos(memberInfo("m1"), idleInfo("m3")), three, unhealthyFor(time.Second, "m2", "m3")),
			spec: spec(3), want: ActRefuse, errHas: "member m3 was replaced (empty data dir) but removing it would lose quorum"},

		// Certificate rotation.
		{name: "rotation picks the soonest expiry", obs: running(infos(memberInfo("m1"),
			func() peer.Info { i := memberInfo("m2"); i.CertNotAfter = decideNow.Add(30 * 24 * time.Hour); return i }(),
			func() peer.Info { i := memberInfo("m3"); i.CertNotAfter = decideNow.Add(10 * 24 * time.Hour); return i }()), three, nil),
			spec: spec(3), want: ActRotate, target: "m3"},
		{name: "no rotation while a member is unhealthy", obs: running(infos(
			func() peer.Info { i := memberInfo("m1"); i.CertNotAfter = decideNow.Add(24 * time.Hour); return i }(), memberInfo("m2")), three, unhealthyFor(time.Minute, "m3")),
			spec: spec(3), want: ActRunCommands},
		{name: "no rotation outside renewBefore", obs: running(infos(memberInfo("m1"), memberInfo("m2"),
			func() peer.Info { i := memberInfo("m3"); i.CertNotAfter = decideNow.Add(61 * 24 * time.Hour); return i }()), three, nil),
			spec: spec(3), want: ActRunCommands},

		// Shrinking.
		{name: "shrink removes the longest dead first", obs: running(infos(memberInfo("m1"), memberInfo("m2"), memberInfo("m3")),
			members(voter("m1"), voter("m2"), voter("m3"), voter("m4"), voter("m5")),
			func() map[string]time.Time {
				u := unhealthyFor(time.Minute, "m4")
				for k, v := range unhealthyFor(time.Hour, "m5") {
					u[k] = v
				}
				return u
			}()),
			spec: spec(3), want: ActRemove, target: "m5", member: memberIDOf("m5")},
		{name: "shrink of healthy members: highest ID, never the leader first", obs: func() Observation {
			o := running(infos(memberInfo("m1"), memberInfo("m2"), memberInfo("m3"), memberInfo("m4"), memberInfo("m5")),
				members(voter("m1"), voter("m2"), voter("m3"), voter("m4"), voter("m5")), nil)
			o.Self = "m5"
			return o
		}(), spec: spec(3), want: ActRemove, target: "m4", member: memberIDOf("m4")},
		{name: "shrink refused when any removal loses quorum", obs: running(infos(memberInfo("m1")), members(voter("m1"), voter("m2"), voter("m3")), unhealthyFor(time.Minute, "m2", "m3")),
			spec: spec(1), want: ActRefuse, errHas: "cluster has 3 members, spec wants 1, but no member can be removed without losing quorum"},

		// Dead members with a replacement waiting.
		{name: "dead member kept inside the threshold", obs: running(infos(memberInfo("m1"), memberInfo("m2"), idleInfo("m4")), three, unhealthyFor(5*time.Minute, "m3")),
			spec: spec(3), want: ActRunCommands},
		{name: "dead member removed past the threshold", obs: running(infos(memberInfo("m1"), memberInfo("m2"), idleInfo("m4")), three, unhealthyFor(5*time.Minute+time.Second, "m3")),
			spec: spec(3), want: ActRemove, target: "m3", member: memberIDOf("m3"), check: func(t *testing.T, d Decision) {
				if !strings.Contains(d.Reason, "peer m4 is waiting") {
					t.Errorf("reason %q", d.Reason)
				}
			}},
		{name: "dead member kept when nobody waits", obs: running(infos(memberInfo("m1"), memberInfo("m2")), three, unhealthyFor(time.Hour, "m3")),
			spec: spec(3), want: ActRunCommands},
		{name: "dead member kept when removal would lose quorum", obs: running(infos(memberInfo("m1"), idleInfo("m4")), three, unhealthyFor(time.Hour, "m2", "m3")),
			spec: spec(3), want: ActRefuse, errHas: "member m2 is dead and a replacement is waiting, but removing it would lose quorum"},

		// Growing.
		{name: "idle peer added as learner", obs: running(infos(memberInfo("m1"), idleInfo("m2"), idleInfo("m3")), members(voter("m1")), nil),
			spec: spec(3), want: ActAddLearner, target: "m2", check: func(t *testing.T, d Decision) {
				if d.Version != decideVer {
					t.Errorf("version %q", d.Version)
				}
			}},
		{name: "no add without a healthy quorum", obs: running(infos(memberInfo("m1"), idleInfo("m4")), three[:3], unhealthyFor(time.Second, "m2", "m3")),
			spec: spec(5), want: ActRefuse, errHas: "only 1 of 3 voters are healthy"},
		{name: "no add when the running version is not installed", obs: noBinary(running(infos(memberInfo("m1"), idleInfo("m2")), members(voter("m1")), nil)),
			spec: spec(3), want: ActRefuse, errHas: "not installed"},
		{name: "one learner at a time", obs: running(infos(memberInfo("m1"), idleInfo("m3"), func() peer.Info { i := memberInfo("m2"); i.EtcdLearner = true; i.EtcdHealthy = false; return i }()),
			members(voter("m1"), learner("m2")), nil),
			spec: spec(3), want: ActPromote, target: "m2"},

		// Steady state.
		{name: "at size: run commands", obs: running(infos(memberInfo("m1"), memberInfo("m2"), memberInfo("m3")), three, nil), spec: spec(3), want: ActRunCommands},
		{name: "version differs from the spec: warn, run commands", obs: running(infos(memberInfo("m1"), memberInfo("m2"), memberInfo("m3")), three, nil),
			spec: control.Spec{MemberCount: 3, EtcdVersion: "3.7.3"}, want: ActRunCommands, errHas: "spec names etcd 3.7.3 but the cluster runs 3.6.16"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := decide(tc.obs, tc.spec, decideNow, decideCfg)
			if d.Action != tc.want {
				t.Fatalf("decide = %s (target %q, reason %q, err %v), want %s", d.Action, d.Target, d.Reason, d.Err, tc.want)
			}
			if tc.target != "" && d.Target != tc.target {
				t.Errorf("target %q, want %q", d.Target, tc.target)
			}
			if tc.member != 0 && d.MemberID != tc.member {
				t.Errorf("member %x, want %x", d.MemberID, tc.member)
			}
			if (d.Action == ActRefuse) != (d.Err != nil) {
				t.Errorf("action %s with err %v", d.Action, d.Err)
			}
			got := d.Warn
			if d.Err != nil {
				got = d.Err.Error()
			}
			if tc.errHas != "" && !strings.Contains(got, tc.errHas) {
				t.Errorf("refusal/warning %q does not say %q", got, tc.errHas)
			}
			if tc.errHas == "" && got != "" {
				t.Errorf("unexpected refusal/warning %q", got)
			}
			if tc.check != nil {
				tc.check(t, d)
			}
		})
	}
}

// TestDecideCreateGraceFollowsTheClock: the same observation waits, then
// creates, as only the clock moves.
func TestDecideCreateGraceFollowsTheClock(t *testing.T) {
	obs := fresh(0, idleInfo("m1"), idleInfo("m2"))
	for _, step := range []struct {
		after time.Duration
		want  Action
	}{{0, ActWait}, {decideCfg.CreateGrace - time.Millisecond, ActWait}, {decideCfg.CreateGrace, ActCreate}} {
		if d := decide(obs, spec(3), decideNow.Add(step.after), decideCfg); d.Action != step.want {
			t.Errorf("%s after becoming leader: %s, want %s", step.after, d.Action, step.want)
		}
	}
}

func TestActionString(t *testing.T) {
	if ActAddLearner.String() != "add-learner" || Action(99).String() != "action(99)" {
		t.Errorf("%s %s", ActAddLearner, Action(99))
	}
}

func TestLeaseIntent(t *testing.T) {
	three := infos(idleInfo("m1"), idleInfo("m2"), idleInfo("m3"))
	for _, tc := range []struct {
		name          string
		self          string
		infos         map[string]peer.Info
		members       int
		holding       bool
		expiredHolder string
		want          bool
		stepDown      bool
	}{
		{name: "lowest ID is the candidate", self: "m1", infos: three, members: 3, want: true},
		{name: "others wait", self: "m2", infos: three, members: 3},
		{name: "holder keeps it", self: "m3", infos: three, members: 3, holding: true, want: true},
		{name: "dead lowest ID left out by gather", self: "m2", infos: infos(idleInfo("m2"), idleInfo("m3")), members: 3, want: true},
		{name: "expired holder still answering is passed over", self: "m2", infos: three, members: 3, expiredHolder: "m1", want: true},
		{name: "expired holder of a higher ID changes nothing", self: "m1", infos: three, members: 3, expiredHolder: "m3", want: true},
		{name: "no quorum: step down even when holding", self: "m1", infos: infos(idleInfo("m1")), members: 3, holding: true, stepDown: true},
		{name: "single member", self: "m1", infos: infos(idleInfo("m1")), members: 1, want: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, why := leaseIntent(tc.self, tc.infos, tc.members, tc.holding, tc.expiredHolder)
			if want != tc.want || (why != "") != tc.stepDown {
				t.Fatalf("leaseIntent = %v, %q; want %v, step down %v", want, why, tc.want, tc.stepDown)
			}
			if tc.stepDown && !strings.Contains(why, "only 1 of the 2 peers needed for a quorum") {
				t.Errorf("step-down reason %q", why)
			}
		})
	}
}
