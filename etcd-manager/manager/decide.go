package manager

import (
	"fmt"
	"sort"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/peer"
)

// The leader's reconcile is split in three: the Manager observes (peers,
// the created marker, etcd's member list), decide picks at most one change
// from that observation, the spec and the clock, and the Manager carries
// it out. decide does no I/O and reads no clock, so every branch is tested
// with a table and a fake time (decide_test.go).

// Observation is what the leader saw on one tick.
type Observation struct {
	// Self is this instance's ID.
	Self string
	// Infos are the reachable instances, this one included, by ID.
	Infos map[string]peer.Info
	// Created is the created marker; nil when the store has none.
	Created *control.Created
	// Bootstrapped: the cluster answered once (the store's marker). Only
	// read when no healthy member answers.
	Bootstrapped bool
	// Listed: Members is etcd's member list. False when no healthy member
	// of the created cluster is reachable.
	Listed  bool
	Members []*etcdserverpb.Member
	// UnhealthySince is when each member (by hex member ID) was first seen
	// unhealthy; healthy members are absent.
	UnhealthySince map[string]time.Time
	// LeaderSince is when this instance became leader.
	LeaderSince time.Time
	// Binaries holds, for each etcd version the decision may need, nil
	// when its binary is installed or the error saying why not. A version
	// missing here counts as not installed.
	Binaries map[string]error
}

// decideConfig holds the settings decide reads.
type decideConfig struct {
	// DeadMemberThreshold: how long a member is unhealthy before it is
	// removed (to make room for a waiting peer, or a learner that never
	// came up).
	DeadMemberThreshold time.Duration
	// RenewBefore: rotate a member's certificates when they expire within it.
	RenewBefore time.Duration
	// CreateGrace: how long after becoming leader the cluster is created
	// with only a quorum of the peers rather than all of them.
	CreateGrace time.Duration
	// CreatedKey names the created marker in refusals.
	CreatedKey string
}

func (c Config) decideConfig(layout control.Layout) decideConfig {
	return decideConfig{
		DeadMemberThreshold: c.DeadMemberThreshold,
		RenewBefore:         c.RenewBefore,
		CreateGrace:         2 * c.LeaseDuration,
		CreatedKey:          layout.CreatedKey(),
	}
}

// Action is the kind of change a Decision asks for.
type Action int

const (
	// ActWait: nothing to change this tick.
	ActWait Action = iota
	// ActRefuse: a change is needed but unsafe or impossible; Err says why.
	ActRefuse
	// ActCreate: write the created marker with Members and tell them to
	// join with initial-cluster-state=new.
	ActCreate
	// ActResendJoins: the cluster was created but never answered; tell the
	// initial members that are still idle to join again.
	ActResendJoins
	// ActLeave: Target believes it is a member (token Token) but is not.
	ActLeave
	// ActJoinLearner: learner Target lost its join; send it again.
	ActJoinLearner
	// ActPromote: promote learner MemberID (Target).
	ActPromote
	// ActRemove: remove member MemberID (Target, may be empty).
	ActRemove
	// ActRotate: Target reissues its etcd certificates.
	ActRotate
	// ActAddLearner: add idle peer Target as a learner and tell it to join.
	ActAddLearner
	// ActRunCommands: the cluster is as the spec wants; run queued commands.
	ActRunCommands
)

var actionNames = [...]string{"wait", "refuse", "create", "resend-joins", "leave", "join-learner", "promote", "remove", "rotate", "add-learner", "run-commands"}

func (a Action) String() string {
	if a < 0 || int(a) >= len(actionNames) {
		return "action(" + strconv.Itoa(int(a)) + ")"
	}
	return actionNames[a]
}

// Decision is the one change decide chose.
type Decision struct {
	Action Action
	// Target is the instance ID acted on.
	Target string
	// MemberID is the etcd member acted on (promote, remove).
	MemberID uint64
	// Reason says why, for the log.
	Reason string
	// Err is the refusal (ActRefuse).
	Err error
	// Members are the initial members (ActCreate).
	Members []control.Member
	// InitialCluster and Version go into a join (ActJoinLearner,
	// ActAddLearner: Version only, the cluster is named after the add).
	InitialCluster string
	Version        string
	// Token is the cluster token a stray peer believes in (ActLeave).
	Token string
	// Warn is a condition worth a warning that changes nothing
	// (ActRunCommands: the spec names a version the cluster does not run).
	Warn string
}

func refuse(format string, args ...any) Decision {
	return Decision{Action: ActRefuse, Err: fmt.Errorf(format, args...)}
}

// memberView is one etcd member as the leader sees it.
type memberView struct {
	member  *etcdserverpb.Member
	name    string
	info    *peer.Info
	healthy bool
}

func (v memberView) started() bool { return v.member.Name != "" }

func (v memberView) key() string { return strconv.FormatUint(v.member.ID, 16) }

// clusterView is etcd's member list joined with the peers' infos.
type clusterView struct {
	views  []memberView
	mapped map[string]bool // instance IDs that are members
	byURL  map[string]string
	// healthyVoters, voters, learners count members.
	healthyVoters, voters, learners int
	// version is the etcd version the healthy voters run (the created
	// marker's until one reports).
	version string
}

// viewMembers maps each member to its instance by name or, before the
// member started, by peer URL.
func viewMembers(members []*etcdserverpb.Member, infos map[string]peer.Info, createdVersion string) clusterView {
	cv := clusterView{mapped: map[string]bool{}, byURL: map[string]string{}, version: createdVersion}
	for _, id := range sortedIDs(infos) {
		for _, u := range infos[id].PeerURLs {
			cv.byURL[u] = id
		}
	}
	for _, mm := range members {
		v := memberView{member: mm, name: mm.Name}
		if v.name == "" {
			for _, u := range mm.PeerURLs {
				if id, ok := cv.byURL[u]; ok {
					v.name = id
				}
			}
		}
		if i, ok := infos[v.name]; ok && v.name != "" {
			v.info = &i
			cv.mapped[v.name] = true
			v.healthy = i.EtcdHealthy && i.MemberID == v.key()
			if v.healthy && !mm.IsLearner && i.EtcdVersion != "" {
				cv.version = i.EtcdVersion
			}
		}
		if mm.IsLearner {
			cv.learners++
		} else {
			cv.voters++
			if v.healthy {
				cv.healthyVoters++
			}
		}
		cv.views = append(cv.views, v)
	}
	return cv
}

// removeSafe says whether removing v keeps a quorum of healthy voters.
func (cv clusterView) removeSafe(v memberView) bool {
	if v.member.IsLearner {
		return true
	}
	after := cv.healthyVoters
	if v.healthy {
		after--
	}
	return cv.voters > 1 && after >= control.Quorum(cv.voters-1)
}

func (cv clusterView) initialCluster() string {
	var ms []control.Member
	for _, v := range cv.views {
		if v.name != "" {
			ms = append(ms, control.Member{Name: v.name, PeerURLs: v.member.PeerURLs})
		}
	}
	return initialCluster(ms)
}

func countHealthy(views []memberView) int {
	n := 0
	for _, v := range views {
		if v.healthy {
			n++
		}
	}
	return n
}

// decide picks the leader's one change for this tick. Order matters: a
// peer that must leave, then learners, then replaced members, then
// certificates, then size; queued commands run only when nothing else is
// to be done.
func decide(obs Observation, spec control.Spec, now time.Time, cfg decideConfig) Decision {
	switch {
	case obs.Created == nil:
		return decideCreate(obs, spec, now, cfg)
	case !obs.Listed:
		// Created, but no healthy member answers. Before the cluster ever
		// answered, the creating leader may have died half way: the
		// initial members still idle are told again. After, members
		// restart their own etcd from their saved state.
		if obs.Bootstrapped {
			return refuse("no healthy etcd member answers; waiting for members to restart")
		}
		return Decision{Action: ActResendJoins, Reason: "the cluster was created but never answered"}
	}
	return decideConverge(obs, spec, now, cfg)
}

// decideCreate creates the cluster when no marker exists: every reachable
// peer idle, the version installed, and all of the spec's members here (or
// a quorum once CreateGrace has passed since this instance became leader).
func decideCreate(obs Observation, spec control.Spec, now time.Time, cfg decideConfig) Decision {
	var idle []peer.Info
	for _, id := range sortedIDs(obs.Infos) {
		i := obs.Infos[id]
		if i.ClusterToken != "" || !i.DataDirEmpty || i.EtcdRunning {
			return refuse("no cluster was created (%s is absent) but peer %s holds etcd data or membership (token %q); refusing to create a new cluster, nothing changed",
				cfg.CreatedKey, i.ID, i.ClusterToken)
		}
		idle = append(idle, i)
	}
	if err := binaryErr(obs, spec.EtcdVersion); err != nil {
		return refuse("cannot create cluster: %w", err)
	}
	if len(idle) < control.Quorum(spec.MemberCount) {
		return Decision{Action: ActWait, Reason: fmt.Sprintf("%d idle peers, a quorum of %d is needed to create the cluster", len(idle), spec.MemberCount)}
	}
	if len(idle) < spec.MemberCount && now.Sub(obs.LeaderSince) < cfg.CreateGrace {
		// Give the other peers a moment to show up, so the cluster starts
		// at full size; after that a quorum is enough and the rest join.
		return Decision{Action: ActWait, Reason: fmt.Sprintf("%d of %d peers here; waiting for the rest until %s after becoming leader", len(idle), spec.MemberCount, cfg.CreateGrace)}
	}
	n := min(spec.MemberCount, len(idle))
	d := Decision{Action: ActCreate, Version: spec.EtcdVersion, Reason: fmt.Sprintf("%d idle peers of %d", n, spec.MemberCount)}
	for _, i := range idle[:n] {
		d.Members = append(d.Members, control.Member{Name: i.ID, PeerURLs: i.PeerURLs})
	}
	return d
}

func binaryErr(obs Observation, version string) error {
	err, ok := obs.Binaries[version]
	if !ok {
		return fmt.Errorf("etcd %s: not checked for an installed binary", version)
	}
	return err
}

// decideConverge applies at most one change to the running cluster.
func decideConverge(obs Observation, spec control.Spec, now time.Time, cfg decideConfig) Decision {
	created := obs.Created
	cv := viewMembers(obs.Members, obs.Infos, created.EtcdVersion)
	deadFor := func(v memberView) time.Duration {
		s, ok := obs.UnhealthySince[v.key()]
		if !ok {
			return 0
		}
		return now.Sub(s)
	}
	remove := func(v memberView, why string) Decision {
		return Decision{Action: ActRemove, Target: v.name, MemberID: v.member.ID, Reason: why}
	}

	// 1. Peers that believe they are members but are not (removed while
	// away, or of an older cluster) leave and become idle.
	for _, id := range sortedIDs(obs.Infos) {
		i := obs.Infos[id]
		if i.ClusterToken == "" || (i.ClusterToken == created.ClusterToken && cv.mapped[id]) {
			continue
		}
		return Decision{Action: ActLeave, Target: id, Token: i.ClusterToken, Reason: "peer is not a member of the cluster"}
	}

	// 2. Learners: start them if their join was lost, promote when caught
	// up, remove one that never comes up. One learner at a time.
	for _, v := range cv.views {
		if !v.member.IsLearner {
			continue
		}
		switch {
		case v.info != nil && v.info.Idle():
			return Decision{Action: ActJoinLearner, Target: v.name, MemberID: v.member.ID, InitialCluster: cv.initialCluster(), Version: cv.version, Reason: "learner is idle: its join was lost"}
		case v.info != nil && v.info.EtcdRunning:
			return Decision{Action: ActPromote, Target: v.name, MemberID: v.member.ID, Reason: "learner runs etcd"}
		case deadFor(v) > cfg.DeadMemberThreshold:
			return remove(v, "learner unreachable past the dead-member threshold")
		}
		return Decision{Action: ActWait, Target: v.name, MemberID: v.member.ID, Reason: "learner not running yet"}
	}

	// 3. A started member whose node came back with an empty disk under the
	// same identity: remove the stale member; it is added again below.
	for _, v := range cv.views {
		if v.started() && v.info != nil && v.info.Idle() {
			if !cv.removeSafe(v) {
				return refuse("member %s was replaced (empty data dir) but removing it would lose quorum", v.name)
			}
			return remove(v, "node replaced: empty data directory under the same identity")
		}
	}

	// 4. Certificate rotation, one member at a time, only when all are healthy.
	if countHealthy(cv.views) == len(cv.views) {
		var soonest *peer.Info
		for _, v := range cv.views {
			if v.info != nil && !v.info.CertNotAfter.IsZero() && v.info.CertNotAfter.Sub(now) < cfg.RenewBefore {
				if soonest == nil || v.info.CertNotAfter.Before(soonest.CertNotAfter) {
					soonest = v.info
				}
			}
		}
		if soonest != nil {
			return Decision{Action: ActRotate, Target: soonest.ID, Reason: "etcd certificates expire at " + soonest.CertNotAfter.UTC().Format(time.RFC3339)}
		}
	}

	var idle []peer.Info
	for _, id := range sortedIDs(obs.Infos) {
		if i := obs.Infos[id]; i.Idle() && !cv.mapped[id] {
			idle = append(idle, i)
		}
	}
	total := len(obs.Members)
	switch {
	case total > spec.MemberCount:
		// Shrink: unhealthy members first, the longest dead first; then
		// healthy ones other than this instance, highest ID first.
		cands := append([]memberView(nil), cv.views...)
		sort.SliceStable(cands, func(a, b int) bool {
			va, vb := cands[a], cands[b]
			if va.healthy != vb.healthy {
				return !va.healthy
			}
			if !va.healthy {
				return deadFor(va) > deadFor(vb)
			}
			if (va.name == obs.Self) != (vb.name == obs.Self) {
				return vb.name == obs.Self
			}
			return va.name > vb.name
		})
		for _, v := range cands {
			if cv.removeSafe(v) {
				return remove(v, fmt.Sprintf("cluster has %d members, spec wants %d", total, spec.MemberCount))
			}
		}
		return refuse("cluster has %d members, spec wants %d, but no member can be removed without losing quorum", total, spec.MemberCount)
	case total == spec.MemberCount && len(idle) > 0:
		for _, v := range cv.views {
			if !v.healthy && deadFor(v) > cfg.DeadMemberThreshold {
				if !cv.removeSafe(v) {
					return refuse("member %s is dead and a replacement is waiting, but removing it would lose quorum", v.name)
				}
				return remove(v, fmt.Sprintf("unhealthy for %s and peer %s is waiting to replace it", deadFor(v).Round(time.Second), idle[0].ID))
			}
		}
	case total < spec.MemberCount && cv.learners == 0 && len(idle) > 0:
		if cv.healthyVoters < control.Quorum(cv.voters) {
			return refuse("not adding a member: only %d of %d voters are healthy", cv.healthyVoters, cv.voters)
		}
		if err := binaryErr(obs, cv.version); err != nil {
			return Decision{Action: ActRefuse, Err: err}
		}
		return Decision{Action: ActAddLearner, Target: idle[0].ID, Version: cv.version, Reason: fmt.Sprintf("cluster has %d members, spec wants %d", total, spec.MemberCount)}
	}
	d := Decision{Action: ActRunCommands, Version: cv.version}
	if spec.EtcdVersion != cv.version {
		d.Warn = fmt.Sprintf("spec names etcd %s but the cluster runs %s; upgrades are not implemented yet", spec.EtcdVersion, cv.version)
	}
	return d
}
