// Package restore is the restore of an etcd cluster from its backups: the
// persisted state of one restore (what a leader killed at any step leaves
// for the next one), the pure decision of the next step from that state
// and what the members report, the parsing and checking of a restore's
// target, the member's own record of what it did to its data directory,
// and the clearing of stale API server leases. The manager runs it
// (etcd-manager/manager/restore.go); etcd-manager-ctl queues it.
//
// A restore is a queued command (control.KindRestoreBackup,
// control.KindRestoreTo). The leader that picks it up writes its state
// create-if-absent at control/restore/<command id>.json (the fence: one
// restore per command, whatever the number of leaders) and every later
// change with compare-and-swap, so a leader of an older term that still
// believes it leads cannot move the restore on.
package restore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/store"
)

// FormatVersion is the version of the persisted state's format.
const FormatVersion = 1

// Phase is where a restore is, as the leader persists it.
type Phase string

// The phases, in order. Validating changes nothing; from Restoring on
// members are stopped, and until Replaying a failure rolls back (every
// member moves its old data back); from Replaying on the restored cluster
// is the one that goes on, and a failure is retried until it opens.
const (
	PhaseValidating  Phase = "validating"
	PhaseRestoring   Phase = "restoring"
	PhaseReplaying   Phase = "replaying"
	PhaseClearing    Phase = "clearing"
	PhaseOpening     Phase = "opening"
	PhaseDone        Phase = "done"
	PhaseRollingBack Phase = "rolling-back"
	PhaseFailed      Phase = "failed"
)

// Terminal reports whether nothing more happens in phase p.
func (p Phase) Terminal() bool { return p == PhaseDone || p == PhaseFailed }

// Owner is the leader term running a restore.
type Owner struct {
	LeaderID   string `json:"leaderID"`
	LeaderTerm int64  `json:"leaderTerm"`
}

// Event is one line of a restore's history, for the operator.
type Event struct {
	Time    time.Time `json:"time"`
	Phase   Phase     `json:"phase"`
	Message string    `json:"message"`
}

// State is the persisted state of one restore.
type State struct {
	FormatVersion int    `json:"formatVersion"`
	CommandID     string `json:"commandID"`
	Kind          string `json:"kind"`
	Target        Target `json:"target"`
	Phase         Phase  `json:"phase"`
	Owner         Owner  `json:"owner"`

	// The plan, fixed when validation passed: the full backup restored,
	// its revision, the delta segments replayed after it (in order) and
	// the revision the restored cluster ends at (the backup's own when
	// there are no segments).
	Backup         string   `json:"backup,omitempty"`
	BackupRevision int64    `json:"backupRevision,omitempty"`
	Segments       []string `json:"segments,omitempty"`
	TargetRevision int64    `json:"targetRevision,omitempty"`
	// Plan is the whole plan (backup.PlanRestore's), which the replay of
	// the segments reads.
	Plan *backup.Plan `json:"plan,omitempty"`

	// EtcdVersion is the version the restored cluster runs (the spec's).
	EtcdVersion string `json:"etcdVersion,omitempty"`
	// OldClusterToken is the cluster restored over ("" when none was
	// created); NewClusterToken the restored cluster's.
	OldClusterToken string `json:"oldClusterToken,omitempty"`
	NewClusterToken string `json:"newClusterToken,omitempty"`
	// OldRevision is the old cluster's revision when validation read it
	// (0 when it did not answer); BumpRevision what etcdutl adds to the
	// snapshot's revision, so that every revision a client of the old
	// cluster saw is in the restored cluster's past (and compacted).
	OldRevision  int64 `json:"oldRevision,omitempty"`
	BumpRevision int64 `json:"bumpRevision,omitempty"`
	// Members are the restored cluster's members, their names and peer URLs.
	Members []control.Member `json:"members,omitempty"`
	// BackupBefore names the full backup of the old cluster taken first,
	// or says why there is none.
	BackupBefore string `json:"backupBefore,omitempty"`
	// Cleared is how many stale API server lease keys were deleted.
	Cleared int64 `json:"cleared,omitempty"`

	Started time.Time `json:"started"`
	Updated time.Time `json:"updated"`
	// Error is why the restore failed (PhaseFailed) or is rolling back.
	Error   string  `json:"error,omitempty"`
	History []Event `json:"history,omitempty"`
}

// InitialCluster is etcd's --initial-cluster of the restored members.
func (s State) InitialCluster() string {
	var parts []string
	for _, m := range s.Members {
		for _, u := range m.PeerURLs {
			parts = append(parts, m.Name+"="+u)
		}
	}
	return strings.Join(parts, ",")
}

// MemberNames are the restored members' names, sorted.
func (s State) MemberNames() []string {
	var out []string
	for _, m := range s.Members {
		out = append(out, m.Name)
	}
	sort.Strings(out)
	return out
}

// Record appends an event to the history (the last 50 are kept).
func (s *State) Record(now time.Time, msg string) {
	s.History = append(s.History, Event{Time: now.UTC(), Phase: s.Phase, Message: msg})
	if n := len(s.History); n > 50 {
		s.History = s.History[n-50:]
	}
}

// Validate checks the fields every phase relies on.
func (s State) Validate() error {
	var errs []error
	if s.FormatVersion != FormatVersion {
		errs = append(errs, fmt.Errorf("formatVersion: %d is not %d", s.FormatVersion, FormatVersion))
	}
	if s.CommandID == "" {
		errs = append(errs, errors.New("commandID: empty"))
	}
	switch s.Phase {
	case PhaseValidating, PhaseRestoring, PhaseReplaying, PhaseClearing, PhaseOpening, PhaseDone, PhaseRollingBack, PhaseFailed:
	default:
		errs = append(errs, fmt.Errorf("phase: %q is not a restore phase", s.Phase))
	}
	planned := s.Phase != PhaseValidating && !(s.Phase == PhaseFailed && s.Backup == "")
	if planned {
		if s.Backup == "" || s.NewClusterToken == "" || len(s.Members) == 0 || s.EtcdVersion == "" {
			errs = append(errs, fmt.Errorf("phase %s needs backup, newClusterToken, members and etcdVersion", s.Phase))
		}
	}
	return errors.Join(errs...)
}

// Load reads the state of restore id and its store version; ok is false
// when there is none.
func Load(ctx context.Context, st store.Store, l control.Layout, id string) (s State, v store.Version, ok bool, err error) {
	key := l.RestoreKey(id)
	b, info, err := store.ReadAll(ctx, st, key)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return State{}, "", false, nil
		}
		return State{}, "", false, fmt.Errorf("reading restore state: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return State{}, "", false, fmt.Errorf("decoding %s: %w", store.JoinURL(st.URL(), key), err)
	}
	if err := s.Validate(); err != nil {
		return State{}, "", false, fmt.Errorf("restore state %s: %w", store.JoinURL(st.URL(), key), err)
	}
	return s, info.Version, true, nil
}

// ErrLost is wrapped when a state write loses: another leader created
// the state first, or changed it since it was read.
var ErrLost = errors.New("the restore state was written by another leader")

// Save writes s: create-if-absent when v is empty (the fence of a new
// restore), else compare-and-swap on v. It returns the new version; a
// lost race is an error wrapping ErrLost.
func Save(ctx context.Context, st store.Store, l control.Layout, s State, v store.Version) (store.Version, error) {
	if err := s.Validate(); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return "", err
	}
	cond := store.Condition{IfVersion: v}
	if v == "" {
		cond = store.Condition{IfAbsent: true}
	}
	info, err := st.Put(ctx, l.RestoreKey(s.CommandID), bytes.NewReader(append(b, '\n')), cond)
	if err != nil {
		if errors.Is(err, store.ErrPrecondition) {
			return "", fmt.Errorf("restore %s: %w", s.CommandID, ErrLost)
		}
		return "", fmt.Errorf("writing restore state: %w", err)
	}
	return info.Version, nil
}

// List returns the IDs of every restore state in the store, sorted.
func List(ctx context.Context, st store.Store, l control.Layout) ([]string, error) {
	infos, err := st.List(ctx, l.RestorePrefix())
	if err != nil {
		return nil, fmt.Errorf("listing restore states: %w", err)
	}
	var ids []string
	for _, i := range infos {
		rest := strings.TrimPrefix(i.Key, l.RestorePrefix())
		if id, ok := strings.CutSuffix(rest, ".json"); ok && id != "" && !strings.Contains(id, "/") {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// Active returns the restore in progress (a state not done or failed),
// if any.
func Active(ctx context.Context, st store.Store, l control.Layout) (s State, ok bool, err error) {
	ids, err := List(ctx, st, l)
	if err != nil {
		return State{}, false, err
	}
	for _, id := range ids {
		s, _, ok, err := Load(ctx, st, l, id)
		if err != nil {
			return State{}, false, err
		}
		if ok && !s.Phase.Terminal() {
			return s, true, nil
		}
	}
	return State{}, false, nil
}
