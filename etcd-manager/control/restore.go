package control

import (
	"context"
	"errors"
	"fmt"
	"path"

	"github.com/kopsnode/agents/pkg/store"
)

// Restore command kinds. Both are run by the leader outside its reconcile
// tick (package etcd-manager/restore holds the state machine).
const (
	// KindRestoreBackup restores the full backup named by Args["backup"].
	KindRestoreBackup = "restore-backup"
	// KindRestoreTo restores to a point in time: Args["revision"] (an etcd
	// revision) or Args["time"] (RFC 3339), from the full backup before it
	// plus the delta segments up to it.
	KindRestoreTo = "restore-to"
)

// IsRestoreKind reports whether kind is one of the restore commands.
func IsRestoreKind(kind string) bool { return kind == KindRestoreBackup || kind == KindRestoreTo }

// RestorePrefix is the folder of restore states: restore/<command id>.json,
// one per restore command, written by the leader that runs it.
func (l Layout) RestorePrefix() string { return path.Join(l.Prefix(), "restore") + "/" }

// RestoreKey is the persisted state of the restore run by command id.
func (l Layout) RestoreKey(id string) string { return path.Join(l.Prefix(), "restore", id+".json") }

// ReadCreatedVersion reads the created marker with its store version, for
// ReplaceCreated. ok is false when no cluster was created.
func ReadCreatedVersion(ctx context.Context, st store.Store, l Layout) (c Created, v store.Version, ok bool, err error) {
	info, err := readJSON(ctx, st, l.CreatedKey(), &c)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Created{}, "", false, nil
		}
		return Created{}, "", false, fmt.Errorf("reading created marker: %w", err)
	}
	return c, info.Version, true, nil
}

// ReplaceCreated rewrites the created marker after a restore gave the
// cluster a new token and members: compare-and-swap on the version read
// (ReadCreatedVersion), or create-if-absent when v is empty, so a marker
// changed meanwhile by someone else is never overwritten.
func ReplaceCreated(ctx context.Context, st store.Store, l Layout, c Created, v store.Version) error {
	cond := store.Condition{IfVersion: v}
	if v == "" {
		cond = store.Condition{IfAbsent: true}
	}
	if _, err := writeJSON(ctx, st, l.CreatedKey(), c, cond); err != nil {
		return fmt.Errorf("replacing created marker: %w", err)
	}
	return nil
}

// ReadCommand reads one queued command; ok is false when there is none.
func ReadCommand(ctx context.Context, st store.Store, l Layout, id string) (c Command, ok bool, err error) {
	if _, err := readJSON(ctx, st, path.Join(l.CommandsPrefix(), id), &c); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Command{}, false, nil
		}
		return Command{}, false, err
	}
	return c, true, nil
}
