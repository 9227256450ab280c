package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/restore"
	"github.com/kopsnode/agents/pkg/cli"
	"github.com/kopsnode/agents/pkg/store"
)

// RestoreQueued is what `restore-backup` and `restore-to` print with
// -o json: the queued command, what it restores, and with --wait its
// result.
type RestoreQueued struct {
	CommandID      string          `json:"commandID"`
	Kind           string          `json:"kind"`
	Target         restore.Target  `json:"target"`
	Backup         string          `json:"backup"`
	BackupRevision int64           `json:"backupRevision"`
	Segments       int             `json:"segments"`
	TargetRevision int64           `json:"targetRevision"`
	Result         *control.Result `json:"result,omitempty"`
}

func restoreBackupCommand() *cli.Command {
	return restoreCommand("restore-backup", "NAME",
		"restore the etcd cluster from the full backup NAME (checked first; the leader runs it, old data kept aside)",
		func(args []string) (restore.Target, error) {
			if len(args) != 1 {
				return restore.Target{}, fmt.Errorf("restore-backup takes one backup NAME (see list-backups): %w", cli.ErrUsage)
			}
			return restore.Target{Backup: args[0]}, nil
		})
}

func restoreToCommand() *cli.Command {
	return restoreCommand("restore-to", "TIME|REVISION",
		"restore the etcd cluster to a point in time (RFC 3339) or revision: the full backup before it plus the delta segments up to it",
		func(args []string) (restore.Target, error) {
			if len(args) != 1 {
				return restore.Target{}, fmt.Errorf("restore-to takes one TIME (RFC 3339) or REVISION: %w", cli.ErrUsage)
			}
			t, err := restore.ParseTo(args[0])
			if err != nil {
				return restore.Target{}, fmt.Errorf("%v: %w", err, cli.ErrUsage)
			}
			return t, nil
		})
}

func restoreCommand(name, usage, summary string, target func([]string) (restore.Target, error)) *cli.Command {
	f := &ctlFlags{}
	var wait time.Duration
	return &cli.Command{
		Name: name, Usage: usage, Summary: summary,
		Flags: func(fs *flag.FlagSet) {
			f.bind(fs)
			f.bindBackupStore(fs)
			fs.DurationVar(&wait, "wait", 0, "wait this long for the restore to finish and print its result (0: only queue it)")
		},
		Run: func(ctx context.Context, env *cli.Env, args []string) error {
			t, err := target(args)
			if err != nil {
				return err
			}
			st, l, err := f.open(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			bst, closeBackups, err := f.openBackups(ctx, st)
			if err != nil {
				return err
			}
			defer closeBackups()
			plan, err := CheckRestore(ctx, st, bst, l, t)
			if err != nil {
				return fmt.Errorf("%w; nothing was queued", err)
			}
			now := time.Now().UTC()
			c := control.Command{ID: now.Format("20060102T150405.000Z") + "-" + t.Kind(), Kind: t.Kind(), Args: t.Args(), Created: now}
			if err := control.QueueCommand(ctx, st, l, c); err != nil {
				return err
			}
			out := RestoreQueued{CommandID: c.ID, Kind: c.Kind, Target: t, Backup: plan.Base.Name, BackupRevision: plan.Base.Revision,
				Segments: len(plan.Segments), TargetRevision: plan.TargetRevision}
			if wait > 0 {
				res, err := waitResult(ctx, st, l, c.ID, wait)
				if err != nil {
					return err
				}
				out.Result = &res
			}
			if err := cli.Print(env.Stdout, f.out, out, func(w io.Writer) error { return printRestoreQueued(w, out) }); err != nil {
				return err
			}
			if out.Result != nil && out.Result.Error != "" {
				return errors.New("the restore failed")
			}
			return nil
		},
	}
}

func printRestoreQueued(w io.Writer, out RestoreQueued) error {
	fmt.Fprintf(w, "queued command %s (%s): restore %s at revision %d", out.CommandID, out.Kind, out.Backup, out.BackupRevision)
	if out.Segments > 0 {
		fmt.Fprintf(w, " plus %d delta segments up to revision %d", out.Segments, out.TargetRevision)
	}
	fmt.Fprintln(w)
	switch {
	case out.Result == nil:
		_, err := fmt.Fprintln(w, "the leader picks it up within seconds; `etcd-manager-ctl status` shows its progress")
		return err
	case out.Result.Error != "":
		_, err := fmt.Fprintf(w, "restore failed on %s: %s\n", out.Result.LeaderID, out.Result.Error)
		return err
	}
	_, err := fmt.Fprintf(w, "done by %s: %s\n", out.Result.LeaderID, out.Result.Detail)
	return err
}

// CheckRestore checks a restore's target against the stores before it is
// queued, as the leader does again before it stops anything: a spec to
// restore into, no other restore in progress, the backup (and deltas)
// there with meta that parses, every object's hash right, an etcd version
// the spec's can read.
func CheckRestore(ctx context.Context, st, bst store.Store, l control.Layout, t restore.Target) (backup.Plan, error) {
	spec, err := control.ReadSpec(ctx, st, l)
	if err != nil {
		return backup.Plan{}, err
	}
	if s, ok, err := restore.Active(ctx, st, l); err != nil {
		return backup.Plan{}, err
	} else if ok {
		return backup.Plan{}, fmt.Errorf("restore %s is in progress (phase %s, %s)", s.CommandID, s.Phase, store.JoinURL(st.URL(), l.RestoreKey(s.CommandID)))
	}
	plan, err := restore.PlanFor(ctx, bst, l, t)
	if err != nil {
		return backup.Plan{}, err
	}
	if err := restore.CheckVersion(plan.Base.Name, plan.Base.EtcdVersion, spec.EtcdVersion); err != nil {
		return backup.Plan{}, err
	}
	dir, err := os.MkdirTemp("", "etcd-manager-ctl-restore-")
	if err != nil {
		return backup.Plan{}, err
	}
	defer os.RemoveAll(dir)
	if err := restore.CheckObjects(ctx, bst, l, plan, dir); err != nil {
		return backup.Plan{}, err
	}
	return plan, nil
}
