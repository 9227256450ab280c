package restore

import (
	"fmt"
	"sort"
	"strings"
)

// Step is where a member is in a restore, as it reports it (peer.Info's
// Restore) and keeps it in its data directory (Local).
type Step string

// The member's steps.
const (
	// StepRestoring: etcd stopped, the old data being moved aside, the
	// snapshot fetched and restored (a goroutine of the member works).
	StepRestoring Step = "restoring"
	// StepQuarantined: the restored etcd runs, serving clients only on a
	// loopback address at the quarantine port.
	StepQuarantined Step = "quarantined"
	// StepOpen: the restored etcd serves clients on the usual URLs.
	StepOpen Step = "open"
	// StepRolledBack: the old data is back and the old etcd runs.
	StepRolledBack Step = "rolled-back"
	// StepFailed: the member could not restore (Error says why); its etcd
	// stays stopped until the leader rolls it back.
	StepFailed Step = "failed"
)

// Request phases the leader sends members (peer.RestoreRequest's Phase).
const (
	RequestRestore  = "restore"
	RequestOpen     = "open"
	RequestRollback = "rollback"
	RequestFinish   = "finish"
)

// MemberObs is what the leader sees of one restored member this tick.
type MemberObs struct {
	Reachable bool
	// CommandID and Step are the restore the member last worked on and
	// where it is; Error its failure.
	CommandID string
	Step      Step
	Error     string
	// Token is the cluster token the member runs under; Healthy that its
	// etcd answers with a raft leader.
	Token   string
	Healthy bool
}

// ActionKind is what the leader does next.
type ActionKind string

// The actions.
const (
	// ActNone: the restore is over.
	ActNone ActionKind = "none"
	// ActValidate: check the backups and plan (nothing is stopped).
	ActValidate ActionKind = "validate"
	// ActSend: send Request to Members (they work asynchronously).
	ActSend ActionKind = "send"
	// ActWait: nothing to do until members move on (Reason says for what).
	ActWait ActionKind = "wait"
	// ActAdvance: move the persisted phase to To.
	ActAdvance ActionKind = "advance"
	// ActReplay: replay the delta segments through a quarantined member.
	ActReplay ActionKind = "replay"
	// ActClear: delete the stale API server leases.
	ActClear ActionKind = "clear"
	// ActFinish: every member open and healthy: rewrite the created
	// marker, write the command's result, tell members to tidy up.
	ActFinish ActionKind = "finish"
	// ActRollback: a member failed before the restored cluster was
	// accepted: move to PhaseRollingBack (Reason is the error).
	ActRollback ActionKind = "rollback"
	// ActFail: every member is back on its old data: move to PhaseFailed.
	ActFail ActionKind = "fail"
)

// Action is the leader's next step.
type Action struct {
	Kind    ActionKind
	Members []string
	Request string
	To      Phase
	Reason  string
}

// Next decides the leader's next step from the persisted state and what
// the restored members report. It is pure: the manager observes, calls
// it, acts, and calls it again on its next pass.
func Next(s State, obs map[string]MemberObs) Action {
	names := s.MemberNames()
	switch s.Phase {
	case PhaseValidating:
		return Action{Kind: ActValidate}
	case PhaseRestoring:
		var send, waiting []string
		for _, n := range names {
			o := obs[n]
			mine := o.CommandID == s.CommandID
			switch {
			case !o.Reachable:
				waiting = append(waiting, n+" (unreachable)")
			case mine && o.Step == StepFailed:
				return Action{Kind: ActRollback, Reason: fmt.Sprintf("member %s could not restore: %s", n, o.Error)}
			case !mine || o.Step == "" || o.Step == StepRolledBack:
				send = append(send, n)
			case o.Step == StepRestoring:
				waiting = append(waiting, n+" (restoring)")
			case o.Step == StepQuarantined && o.Healthy && o.Token == s.NewClusterToken:
			default:
				waiting = append(waiting, fmt.Sprintf("%s (%s, healthy %t)", n, o.Step, o.Healthy))
			}
		}
		if len(send) > 0 {
			return Action{Kind: ActSend, Members: send, Request: RequestRestore}
		}
		if len(waiting) > 0 {
			return Action{Kind: ActWait, Reason: "waiting for " + strings.Join(waiting, ", ")}
		}
		if len(s.Segments) > 0 {
			return Action{Kind: ActAdvance, To: PhaseReplaying, Reason: "every member runs the restored snapshot, quarantined"}
		}
		return Action{Kind: ActAdvance, To: PhaseClearing, Reason: "every member runs the restored snapshot, quarantined"}
	case PhaseReplaying:
		return Action{Kind: ActReplay}
	case PhaseClearing:
		return Action{Kind: ActClear}
	case PhaseOpening:
		// One member at a time: each restarts its etcd, and a member
		// stopping while another restarts would stall the raft leader's
		// hand-over (and the quorum).
		var send, waiting []string
		restarting := false
		for _, n := range names {
			o := obs[n]
			switch {
			case !o.Reachable:
				waiting = append(waiting, n+" (unreachable)")
			case o.CommandID == s.CommandID && o.Step == StepQuarantined:
				send = append(send, n)
			case o.CommandID == s.CommandID && o.Step == StepOpen && o.Healthy && o.Token == s.NewClusterToken:
			default:
				restarting = restarting || o.Step == StepOpen
				waiting = append(waiting, fmt.Sprintf("%s (%s, healthy %t)", n, o.Step, o.Healthy))
			}
		}
		if len(send) > 0 && !restarting {
			return Action{Kind: ActSend, Members: send[:1], Request: RequestOpen}
		}
		if len(waiting) > 0 {
			return Action{Kind: ActWait, Reason: "waiting for " + strings.Join(waiting, ", ")}
		}
		return Action{Kind: ActFinish}
	case PhaseRollingBack:
		var send, waiting []string
		for _, n := range names {
			o := obs[n]
			switch {
			case !o.Reachable:
				waiting = append(waiting, n+" (unreachable)")
			case o.CommandID != s.CommandID || o.Step == StepRolledBack:
				// Never touched by this restore, or back on its old data.
			default:
				send = append(send, n)
			}
		}
		if len(send) > 0 {
			return Action{Kind: ActSend, Members: send, Request: RequestRollback}
		}
		if len(waiting) > 0 {
			return Action{Kind: ActWait, Reason: "rolling back; waiting for " + strings.Join(waiting, ", ")}
		}
		return Action{Kind: ActFail, Reason: s.Error}
	}
	return Action{Kind: ActNone}
}

// Candidate is a reachable instance as the planner sees it.
type Candidate struct {
	ID       string
	PeerURLs []string
	// Token is the cluster it is a member of ("" when idle); Idle that it
	// has no etcd and no data.
	Token string
	Idle  bool
}

// ChooseMembers picks the restored cluster's members: memberCount
// reachable instances, the old cluster's members first (token), then idle
// ones, by ID. Fewer than memberCount is an error naming who is there:
// a restore waits for every member rather than restoring a smaller
// cluster.
func ChooseMembers(memberCount int, token string, cands []Candidate) ([]Candidate, error) {
	cs := append([]Candidate(nil), cands...)
	rank := func(c Candidate) int {
		switch {
		case token != "" && c.Token == token:
			return 0
		case c.Idle:
			return 1
		}
		return 2
	}
	sort.SliceStable(cs, func(a, b int) bool {
		if ra, rb := rank(cs[a]), rank(cs[b]); ra != rb {
			return ra < rb
		}
		return cs[a].ID < cs[b].ID
	})
	var out []Candidate
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.ID)
		if rank(c) < 2 && len(out) < memberCount && len(c.PeerURLs) > 0 {
			out = append(out, c)
		}
	}
	if len(out) < memberCount {
		return nil, fmt.Errorf("a restore needs %d members reachable (members of the cluster or idle instances); reachable: %s", memberCount, orNone(ids))
	}
	return out, nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
