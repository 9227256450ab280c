// Package quorum decides how an etcd cluster that lost its quorum for good
// is rebuilt: from the surviving member that got furthest (its data made a
// one-member cluster with --force-new-cluster) or, when no survivor holds
// data, from the newest full backup (a restore). Plan is a pure function
// of what the instances report; etcd-manager's status and
// `etcd-manager-ctl recover-quorum` both show it before anything changes.
//
// Each instance that sees the quorum lost writes a Report of itself to
// control/quorum/<id> (at most once per lease duration), so that the ctl,
// which cannot reach the instances, sees the survivors too.
package quorum

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

// Report is what one instance says about itself while the quorum is lost.
type Report struct {
	ID       string    `json:"id"`
	Observed time.Time `json:"observed"`
	// ClusterToken is the cluster its data belongs to ("" when idle).
	ClusterToken string `json:"clusterToken,omitempty"`
	DataDirEmpty bool   `json:"dataDirEmpty"`
	EtcdRunning  bool   `json:"etcdRunning"`
	// Healthy: its etcd has a raft leader (a quorum exists).
	Healthy bool `json:"healthy"`
	// RaftIndex, RaftTerm and Revision are how far its member got (0 when
	// its etcd does not answer).
	RaftIndex uint64 `json:"raftIndex,omitempty"`
	RaftTerm  uint64 `json:"raftTerm,omitempty"`
	Revision  int64  `json:"revision,omitempty"`
	// Reachable are the instances it reached.
	Reachable []string `json:"reachable,omitempty"`
}

// Sources of a recovery.
const (
	SourceMember = "member"
	SourceBackup = "backup"
	SourceNone   = "none"
)

// Plan is how the quorum would be recovered.
type Plan struct {
	// Lost: fewer than Needed members are healthy.
	Lost    bool `json:"lost"`
	Healthy int  `json:"healthy"`
	Needed  int  `json:"needed"`
	// Source is SourceMember (Member, at RaftIndex and Revision),
	// SourceBackup (Backup, at BackupRevision, taken BackupStarted) or
	// SourceNone (Reason says why).
	Source         string    `json:"source"`
	Member         string    `json:"member,omitempty"`
	RaftIndex      uint64    `json:"raftIndex,omitempty"`
	Revision       int64     `json:"revision,omitempty"`
	Backup         string    `json:"backup,omitempty"`
	BackupRevision int64     `json:"backupRevision,omitempty"`
	BackupStarted  time.Time `json:"backupStarted,omitzero"`
	Reason         string    `json:"reason,omitempty"`
	// Discards says, one line each, what the recovery throws away.
	Discards []string `json:"discards,omitempty"`
	// Survivors are the reports the plan was made from.
	Survivors []Report `json:"survivors"`
}

// Choice is what an operator asked for: a member, a backup, or neither
// (the plan picks).
type Choice struct {
	Member string
	Backup string
}

// MakePlan decides the recovery from the reports of the reachable or
// reporting instances, the spec's member count, the cluster's token and
// the newest full backup (nil when none). A choice overrides the pick
// after checks: the member must hold the cluster's data; the backup must
// be the one given (the caller resolved it). It does no I/O.
func MakePlan(memberCount int, token string, reports []Report, newest *backup.Meta, c Choice) (Plan, error) {
	p := Plan{Needed: control.Quorum(memberCount), Survivors: append([]Report(nil), reports...)}
	sort.Slice(p.Survivors, func(a, b int) bool { return p.Survivors[a].ID < p.Survivors[b].ID })
	var withData []Report
	for _, r := range p.Survivors {
		if r.ClusterToken == token && token != "" {
			if r.Healthy {
				p.Healthy++
			}
			if !r.DataDirEmpty {
				withData = append(withData, r)
			}
		}
	}
	p.Lost = p.Healthy < p.Needed
	// Furthest first: raft index, then revision, then the lowest ID.
	sort.SliceStable(withData, func(a, b int) bool {
		if withData[a].RaftIndex != withData[b].RaftIndex {
			return withData[a].RaftIndex > withData[b].RaftIndex
		}
		return withData[a].Revision > withData[b].Revision
	})
	useMember := func(r Report) {
		p.Source, p.Member, p.RaftIndex, p.Revision = SourceMember, r.ID, r.RaftIndex, r.Revision
		p.Discards = append(p.Discards, fmt.Sprintf("every member but %s is removed from the etcd cluster; a member that comes back is told to leave (its data moved aside) and joins again empty", r.ID))
		p.Discards = append(p.Discards, fmt.Sprintf("writes that %s had not received: those after raft index %d (revision %d)", r.ID, r.RaftIndex, r.Revision))
		for _, o := range withData {
			if o.ID != r.ID {
				p.Discards = append(p.Discards, fmt.Sprintf("the data of surviving member %s (raft index %d, revision %d)", o.ID, o.RaftIndex, o.Revision))
			}
		}
	}
	useBackup := func(m backup.Meta) {
		p.Source, p.Backup, p.BackupRevision, p.BackupStarted = SourceBackup, m.Name, m.Revision, m.Started
		p.Discards = append(p.Discards, fmt.Sprintf("every write after revision %d (backup %s); restore-to a later time keeps more where delta segments cover it", m.Revision, m.Name))
		for _, o := range withData {
			p.Discards = append(p.Discards, fmt.Sprintf("the data of surviving member %s (raft index %d, revision %d), kept aside", o.ID, o.RaftIndex, o.Revision))
		}
	}
	switch {
	case c.Member != "" && c.Backup != "":
		return p, errors.New("choose a member or a backup, not both")
	case c.Member != "":
		for _, r := range withData {
			if r.ID == c.Member {
				useMember(r)
				return p, nil
			}
		}
		var have []string
		for _, r := range withData {
			have = append(have, r.ID)
		}
		return p, fmt.Errorf("member %s is not a surviving member holding the cluster's data (survivors with data: %s)", c.Member, orNone(have))
	case c.Backup != "":
		if newest == nil || newest.Name != c.Backup {
			return p, fmt.Errorf("backup %s was not found", c.Backup)
		}
		useBackup(*newest)
		return p, nil
	case len(withData) > 0:
		useMember(withData[0])
	case newest != nil:
		useBackup(*newest)
	default:
		p.Source, p.Reason = SourceNone, "no surviving member holds the cluster's data and there is no full backup"
	}
	return p, nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// WriteReport writes an instance's report.
func WriteReport(ctx context.Context, st store.Store, l control.Layout, r Report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if _, err := st.Put(ctx, l.QuorumReportKey(r.ID), bytes.NewReader(append(b, '\n')), store.Condition{}); err != nil {
		return fmt.Errorf("writing quorum report: %w", err)
	}
	return nil
}

// ReadReports reads the reports observed at or after since; older ones
// (an instance that stopped reporting) are left out.
func ReadReports(ctx context.Context, st store.Store, l control.Layout, since time.Time) ([]Report, error) {
	infos, err := st.List(ctx, l.QuorumReportsPrefix())
	if err != nil {
		return nil, fmt.Errorf("listing quorum reports: %w", err)
	}
	var out []Report
	for _, i := range infos {
		b, _, err := store.ReadAll(ctx, st, i.Key)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var r Report
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("decoding %s: %w", store.JoinURL(st.URL(), i.Key), err)
		}
		if !r.Observed.Before(since) {
			out = append(out, r)
		}
	}
	return out, nil
}

// DeleteReport removes an instance's report (its quorum is back).
func DeleteReport(ctx context.Context, st store.Store, l control.Layout, id string) error {
	return st.Delete(ctx, l.QuorumReportKey(id))
}
