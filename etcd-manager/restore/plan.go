package restore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/store"
)

// PlanFor finds the plan of target in the backup store: for a backup
// name, that full backup alone; for a revision or a time, the newest full
// backup before it and the linked delta segments up to it
// (backup.PlanRestore). A backup that does not exist, a meta object that
// does not parse, a target outside the recoverable range (a chain with a
// gap ends a range) are errors naming the object or the ranges.
func PlanFor(ctx context.Context, st store.Store, l control.Layout, t Target) (backup.Plan, error) {
	if t.Backup != "" {
		m, err := backup.ReadMeta(ctx, st, l, t.Backup)
		if err != nil {
			return backup.Plan{}, err
		}
		return backup.Plan{Target: backup.Target{Revision: m.Revision}, Base: m, TargetRevision: m.Revision}, nil
	}
	ls, err := backup.List(ctx, st, l)
	if err != nil {
		return backup.Plan{}, err
	}
	segs, err := backup.ListSegments(ctx, st, l)
	if err != nil {
		return backup.Plan{}, err
	}
	bt := backup.Target{Revision: t.Revision, Time: t.Time}
	p, err := backup.PlanRestore(ls.Backups, segs.Segments, bt)
	if err != nil {
		return backup.Plan{}, fmt.Errorf("restore to %s: %w", t, err)
	}
	return p, nil
}

// SegmentNames are the names of a plan's delta segments, in order.
func SegmentNames(p backup.Plan) []string {
	var out []string
	for _, s := range p.Segments {
		out = append(out, s.Name)
	}
	return out
}

// CheckObjects reads back every object of the plan from the store and
// checks it, so that a damaged object or a broken chain is found before
// any member stops: the full backup's stored sha256 and etcd's own hash
// of the snapshot inside (the copy goes to spoolDir and is removed), and
// every delta segment's hash and its link to the one before (a dry run of
// the replay that applies nothing).
func CheckObjects(ctx context.Context, st store.Store, l control.Layout, p backup.Plan, spoolDir string) error {
	f, err := os.CreateTemp(spoolDir, "restore-check-*.db")
	if err != nil {
		return fmt.Errorf("creating a spool file in %s: %w", spoolDir, err)
	}
	name := f.Name()
	f.Close()
	defer os.Remove(name)
	if _, err := backup.Read(ctx, st, l, p.Base.Name, name); err != nil {
		return err
	}
	if _, err := backup.ReplayDeltas(ctx, st, l, p, func(context.Context, int64, []backup.Event) error { return nil }); err != nil {
		return err
	}
	return nil
}

// Replay applies the plan's delta segments through c (a quarantined
// member of the restored cluster), each source revision as one
// transaction, and returns the last source revision applied. Replaying
// again from the start (a leader killed mid-way) ends in the same keys.
func Replay(ctx context.Context, st store.Store, l control.Layout, s State, c *clientv3.Client) (int64, error) {
	if s.Plan == nil || len(s.Plan.Segments) == 0 {
		return s.BackupRevision, nil
	}
	return backup.ReplayDeltas(ctx, st, l, *s.Plan, backup.TxnApply(c, 0))
}

// SnapshotFile is where a member fetches the snapshot it restores.
func SnapshotFile(dataDir string) string {
	return filepath.Join(dataDir, "restore-spool", "snapshot.db")
}
