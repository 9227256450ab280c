package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/cli"
	"github.com/kopsnode/agents/pkg/store"
)

func listBackupsCommand() *cli.Command {
	f := &ctlFlags{}
	return &cli.Command{
		Name: "list-backups", Summary: "list the full backups, newest first (incomplete and unreadable ones too), and the recoverable range with the delta segments",
		Flags: func(fs *flag.FlagSet) {
			f.bind(fs)
			f.bindBackupStore(fs)
		},
		Run: func(ctx context.Context, env *cli.Env, args []string) error {
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
			ls, err := backup.List(ctx, bst, l)
			if err != nil {
				return err
			}
			segs, err := backup.ListSegments(ctx, bst, l)
			if err != nil {
				return err
			}
			bl := newBackupList(ls, segs)
			return cli.Print(env.Stdout, f.out, bl, func(w io.Writer) error {
				if err := printBackups(w, ls, bst, time.Now()); err != nil {
					return err
				}
				return printRecoverable(w, bl, time.Now())
			})
		},
	}
}

func printBackups(w io.Writer, ls backup.Listing, st store.Store, now time.Time) error {
	if len(ls.Backups) == 0 {
		fmt.Fprintf(w, "no complete backups in %s\n", st.URL())
	} else {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tAGE\tREVISION\tKEYS\tDB SIZE\tSTORED\tETCD\tWRITER\tREASON")
		for _, m := range ls.Backups {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s (term %d)\t%s\n", m.Name, now.Sub(m.Started).Round(time.Second), m.Revision, m.KeyCount,
				bytesStr(m.DBSize), bytesStr(m.StoredSize), m.EtcdVersion, m.Writer.LeaderID, m.Writer.LeaderTerm, orDash(m.Reason))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, n := range ls.Incomplete {
		fmt.Fprintf(w, "incomplete (no meta object; in progress or failed): %s\n", n)
	}
	for _, i := range ls.Invalid {
		fmt.Fprintf(w, "unusable: %s: %s\n", i.Name, i.Error)
	}
	return nil
}

func bytesStr(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// BackupNowResult is what `backup-now -o json` prints.
type BackupNowResult struct {
	CommandID string          `json:"commandID"`
	Result    *control.Result `json:"result,omitempty"`
}

func backupNowCommand() *cli.Command {
	f := &ctlFlags{}
	var wait time.Duration
	return &cli.Command{
		Name: "backup-now", Summary: "ask the leader for a full backup now (a queued command)",
		Flags: func(fs *flag.FlagSet) {
			f.bind(fs)
			fs.DurationVar(&wait, "wait", 0, "wait this long for the leader to finish the backup and print its name (0: only queue it)")
		},
		Run: func(ctx context.Context, env *cli.Env, args []string) error {
			st, l, err := f.open(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			now := time.Now().UTC()
			c := control.Command{ID: now.Format("20060102T150405.000Z") + "-" + control.KindBackupNow, Kind: control.KindBackupNow, Created: now}
			if err := control.QueueCommand(ctx, st, l, c); err != nil {
				return err
			}
			out := BackupNowResult{CommandID: c.ID}
			if wait > 0 {
				res, err := waitResult(ctx, st, l, c.ID, wait)
				if err != nil {
					return err
				}
				out.Result = &res
			}
			if err := cli.Print(env.Stdout, f.out, out, func(w io.Writer) error {
				switch {
				case out.Result == nil:
					_, err := fmt.Fprintf(w, "queued command %s (%s); the leader picks it up within seconds\n", c.ID, c.Kind)
					return err
				case out.Result.Error != "":
					_, err := fmt.Fprintf(w, "command %s failed on %s: %s\n", c.ID, out.Result.LeaderID, out.Result.Error)
					return err
				}
				_, err := fmt.Fprintf(w, "backup %s taken by %s\n", out.Result.Detail, out.Result.LeaderID)
				return err
			}); err != nil {
				return err
			}
			if out.Result != nil && out.Result.Error != "" {
				return errors.New("the backup failed")
			}
			return nil
		},
	}
}

// waitResult polls a command's result until it is there or wait passes.
func waitResult(ctx context.Context, st store.Store, l control.Layout, id string, wait time.Duration) (control.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		res, ok, err := control.ReadResult(ctx, st, l, id)
		if err != nil && ctx.Err() == nil {
			return control.Result{}, err
		}
		if ok {
			return res, nil
		}
		select {
		case <-ctx.Done():
			return control.Result{}, fmt.Errorf("command %s has no result after %s (is a leader running? `etcd-manager-ctl status` shows it): %w", id, wait, ctx.Err())
		case <-t.C:
		}
	}
}
