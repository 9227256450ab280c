package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/store"
)

// Plan is what a restore restores: a full backup, the delta segments
// replayed after it, and the revision it ends at.
type Plan struct {
	Base           backup.Meta
	Segments       []string
	TargetRevision int64
}

// PlanFor finds the plan of target in the backup store. A backup that
// does not exist or whose meta does not parse is an error naming the
// object.
func PlanFor(ctx context.Context, st store.Store, l control.Layout, t Target) (Plan, error) {
	if t.Backup != "" {
		m, err := backup.ReadMeta(ctx, st, l, t.Backup)
		if err != nil {
			return Plan{}, err
		}
		return Plan{Base: m, TargetRevision: m.Revision}, nil
	}
	return Plan{}, fmt.Errorf("restore to %s: point-in-time restores need the delta segments, which this build cannot read yet", t)
}

// CheckObjects reads back every object of the plan from the store and
// checks its hash (the full backup's stored sha256 and etcd's own hash of
// the snapshot inside), so that a damaged object is found before any
// member stops. The copies go to spoolDir and are removed.
func CheckObjects(ctx context.Context, st store.Store, l control.Layout, p Plan, spoolDir string) error {
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
	if len(p.Segments) > 0 {
		return errors.New("delta segments cannot be checked by this build")
	}
	return nil
}

// Replay applies the plan's delta segments through c (a quarantined
// member of the restored cluster) and returns the last revision applied.
func Replay(ctx context.Context, st store.Store, l control.Layout, s State, c *clientv3.Client) (int64, error) {
	if len(s.Segments) == 0 {
		return s.BackupRevision, nil
	}
	return 0, errors.New("delta segments cannot be replayed by this build")
}

// SnapshotFile is where a member fetches the snapshot it restores.
func SnapshotFile(dataDir string) string {
	return filepath.Join(dataDir, "restore-spool", "snapshot.db")
}
