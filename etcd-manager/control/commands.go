package control

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/kopsnode/agents/pkg/store"
)

// Command states, as ListCommands reports them.
const (
	// StatePending: queued, not claimed by any leader yet.
	StatePending = "pending"
	// StateClaimed: a leader claimed it and has not written a result: it
	// runs, or the leader died while running it.
	StateClaimed = "claimed"
	// StateSucceeded and StateFailed: claimed and finished.
	StateSucceeded = "succeeded"
	StateFailed    = "failed"
	// StateOrphan: a claim or result whose command was deleted.
	StateOrphan = "orphan"
)

// CommandRecord is a command with its claim and result.
type CommandRecord struct {
	ID      string   `json:"id"`
	State   string   `json:"state"`
	Command *Command `json:"command,omitempty"`
	Claim   *Claim   `json:"claim,omitempty"`
	Result  *Result  `json:"result,omitempty"`
}

// ErrNoCommand is wrapped by errors about a command that does not exist.
var ErrNoCommand = errors.New("no such command")

// ErrCommandClaimed is wrapped when a claimed, unfinished command is
// deleted without force.
var ErrCommandClaimed = errors.New("command claimed by a leader")

func commandKey(l Layout, id string) string { return path.Join(l.CommandsPrefix(), id) }
func claimKey(l Layout, id string) string   { return path.Join(l.CommandsPrefix(), id+".claimed") }
func resultKey(l Layout, id string) string  { return path.Join(l.CommandsPrefix(), id+".result") }

// ListCommands returns every command of the queue, pending, claimed and
// finished, with its claim and result, oldest ID first.
func ListCommands(ctx context.Context, st store.Store, l Layout) ([]CommandRecord, error) {
	infos, err := st.List(ctx, l.CommandsPrefix())
	if err != nil {
		return nil, fmt.Errorf("listing commands: %w", err)
	}
	ids := map[string]bool{}
	for _, i := range infos {
		rest, ok := strings.CutPrefix(i.Key, l.CommandsPrefix())
		if !ok || strings.Contains(rest, "/") {
			continue
		}
		id := strings.TrimSuffix(strings.TrimSuffix(rest, ".claimed"), ".result")
		ids[id] = true
	}
	out := []CommandRecord{}
	for id := range ids {
		r, err := readRecord(ctx, st, l, id)
		if err != nil {
			if errors.Is(err, ErrNoCommand) {
				continue // deleted since the listing
			}
			return nil, err
		}
		out = append(out, r)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out, nil
}

// ReadCommandRecord returns one command's record. The error wraps ErrNoCommand
// when neither the command nor a claim or result of it exists.
func ReadCommandRecord(ctx context.Context, st store.Store, l Layout, id string) (CommandRecord, error) {
	if err := validateCommandID(id); err != nil {
		return CommandRecord{}, err
	}
	return readRecord(ctx, st, l, id)
}

func readRecord(ctx context.Context, st store.Store, l Layout, id string) (CommandRecord, error) {
	r := CommandRecord{ID: id}
	var c Command
	if _, err := readJSON(ctx, st, commandKey(l, id), &c); err == nil {
		r.Command = &c
	} else if !errors.Is(err, store.ErrNotFound) {
		return r, err
	}
	var cl Claim
	if _, err := readJSON(ctx, st, claimKey(l, id), &cl); err == nil {
		r.Claim = &cl
	} else if !errors.Is(err, store.ErrNotFound) {
		return r, err
	}
	res, ok, err := ReadResult(ctx, st, l, id)
	if err != nil {
		return r, err
	}
	if ok {
		r.Result = &res
	}
	switch {
	case r.Command == nil && r.Claim == nil && r.Result == nil:
		return r, fmt.Errorf("command %s: %s: %w", id, store.JoinURL(st.URL(), commandKey(l, id)), ErrNoCommand)
	case r.Command == nil:
		r.State = StateOrphan
	case r.Result != nil && r.Result.Error != "":
		r.State = StateFailed
	case r.Result != nil:
		r.State = StateSucceeded
	case r.Claim != nil:
		r.State = StateClaimed
	default:
		r.State = StatePending
	}
	return r, nil
}

func validateCommandID(id string) error {
	if id == "" || strings.ContainsAny(id, "/ ") || isMarker(id) {
		return fmt.Errorf("command id %q: must be non-empty, without slashes or spaces, not ending in .claimed or .result", id)
	}
	return nil
}

// DeleteCommand removes a command and its claim and result. A pending or
// finished one goes; a claimed, unfinished one only with force (the
// error wraps ErrCommandClaimed): deleting it does not stop a leader that
// runs it. The command object goes first, so a command is never left
// without its claim and run again. It returns the record as it was.
func DeleteCommand(ctx context.Context, st store.Store, l Layout, id string, force bool) (CommandRecord, error) {
	r, err := ReadCommandRecord(ctx, st, l, id)
	if err != nil {
		return r, err
	}
	if r.State == StateClaimed && !force {
		return r, fmt.Errorf("command %s (%s) was claimed by leader %s (term %d) at %s and has no result yet: it is running, or that leader died while running it; deleting it does not stop it (use --force to delete its record anyway): %w",
			id, r.Command.Kind, r.Claim.LeaderID, r.Claim.LeaderTerm, r.Claim.Claimed.UTC().Format("2006-01-02 15:04:05Z"), ErrCommandClaimed)
	}
	for _, k := range []string{commandKey(l, id), claimKey(l, id), resultKey(l, id)} {
		if err := st.Delete(ctx, k); err != nil {
			return r, fmt.Errorf("deleting command %s: %w", id, err)
		}
	}
	if r.State == StatePending {
		// A leader may have listed it just before and claimed it just
		// after: say so rather than report a command that will not run.
		var cl Claim
		if _, err := readJSON(ctx, st, claimKey(l, id), &cl); err == nil {
			return r, fmt.Errorf("command %s was claimed by leader %s (term %d) while it was being deleted: it may run; its claim is left as an orphan record: %w", id, cl.LeaderID, cl.LeaderTerm, ErrCommandClaimed)
		}
	}
	return r, nil
}

// KindRecoverQuorum rebuilds a cluster that lost its quorum for good from
// the surviving member named by Args["member"]: that member's instance
// (not the leader, which may not exist) takes the lease, claims the
// command, keeps its data aside and restarts its etcd with
// --force-new-cluster; the leader then adds the replacements as learners
// (docs/etcd-manager.md, "Quorum loss").
const KindRecoverQuorum = "recover-quorum"

// QuorumReportsPrefix is the folder of the instances' quorum-loss reports.
func (l Layout) QuorumReportsPrefix() string { return path.Join(l.Prefix(), "quorum") + "/" }

// QuorumReportKey is one instance's quorum-loss report.
func (l Layout) QuorumReportKey(id string) string { return path.Join(l.Prefix(), "quorum", id) }
