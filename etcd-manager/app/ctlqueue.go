package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/cli"
	"github.com/kopsnode/agents/pkg/store"
)

// The queue and backup housekeeping commands of etcd-manager-ctl:
// list-commands, delete-command, delete-backup.

// CommandList is what `list-commands -o json` prints.
type CommandList struct {
	Commands []control.CommandRecord `json:"commands"`
}

func listCommandsCommand() *cli.Command {
	f := &ctlFlags{}
	return &cli.Command{
		Name: "list-commands", Summary: "list the queued commands: pending, claimed (running, or its leader died), finished with their result",
		Flags: f.bind,
		Run: func(ctx context.Context, env *cli.Env, args []string) error {
			if len(args) != 0 {
				return fmt.Errorf("list-commands takes no arguments: %w", cli.ErrUsage)
			}
			st, l, err := f.open(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			cs, err := control.ListCommands(ctx, st, l)
			if err != nil {
				return err
			}
			out := CommandList{Commands: cs}
			return cli.Print(env.Stdout, f.out, out, func(w io.Writer) error { return printCommands(w, out, st.URL()) })
		},
	}
}

func printCommands(w io.Writer, out CommandList, url string) error {
	if len(out.Commands) == 0 {
		_, err := fmt.Fprintf(w, "no commands in %s\n", url)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tSTATE\tBY\tDETAIL")
	for _, r := range out.Commands {
		kind, by, detail := "-", "-", ""
		if r.Command != nil {
			kind = r.Command.Kind
			for _, k := range sortedKeys(r.Command.Args) {
				detail += k + "=" + r.Command.Args[k] + " "
			}
		}
		if r.Claim != nil {
			by = fmt.Sprintf("%s (term %d)", r.Claim.LeaderID, r.Claim.LeaderTerm)
		}
		switch r.State {
		case control.StateClaimed:
			detail += "claimed " + r.Claim.Claimed.UTC().Format(time.RFC3339) + ", no result yet"
		case control.StateFailed:
			detail += "error: " + r.Result.Error
		case control.StateSucceeded:
			detail += orDash(r.Result.Detail)
		case control.StateOrphan:
			detail += "the command was deleted; its claim or result is left"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.ID, kind, r.State, by, detail)
	}
	return tw.Flush()
}

func sortedKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// CommandDeleted is what `delete-command -o json` prints.
type CommandDeleted struct {
	Deleted control.CommandRecord `json:"deleted"`
	// Warning says what deleting it did not undo (a claimed command).
	Warning string `json:"warning,omitempty"`
}

func deleteCommandCommand() *cli.Command {
	f := &ctlFlags{}
	var force bool
	return &cli.Command{
		Name: "delete-command", Usage: "ID", Summary: "delete a queued command (a pending or finished one; a claimed one only with --force)",
		Flags: func(fs *flag.FlagSet) {
			f.bind(fs)
			fs.BoolVar(&force, "force", false, "delete a claimed command that has no result yet; this does not stop a leader that is running it")
		},
		Run: func(ctx context.Context, env *cli.Env, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("delete-command takes one command ID (see list-commands): %w", cli.ErrUsage)
			}
			st, l, err := f.open(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			r, err := control.DeleteCommand(ctx, st, l, args[0], force)
			if err != nil {
				return err
			}
			out := CommandDeleted{Deleted: r}
			if r.State == control.StateClaimed {
				out.Warning = fmt.Sprintf("it was claimed by leader %s (term %d) with no result: if that leader is still running it, it goes on, and its result is written as an orphan record", r.Claim.LeaderID, r.Claim.LeaderTerm)
			}
			return cli.Print(env.Stdout, f.out, out, func(w io.Writer) error {
				fmt.Fprintf(w, "deleted command %s (%s)\n", r.ID, r.State)
				if out.Warning != "" {
					fmt.Fprintf(w, "warning: %s\n", out.Warning)
				}
				return nil
			})
		},
	}
}

// BackupDeleted is what `delete-backup -o json` prints.
type BackupDeleted struct {
	Name  string `json:"name"`
	Store string `json:"store"`
	// Was says what it was: complete, incomplete, unusable.
	Was string `json:"was"`
	// OrphanedSegments are the delta segments of the chain that started
	// from it: no point-in-time restore can use them any more.
	OrphanedSegments int `json:"orphanedSegments,omitempty"`
}

// ErrProtectedBackup is wrapped when delete-backup is asked for the
// backup that must stay.
var ErrProtectedBackup = errors.New("protected backup")

func deleteBackupCommand() *cli.Command {
	f := &ctlFlags{}
	return &cli.Command{
		Name: "delete-backup", Usage: "NAME", Summary: "delete a full backup, every version of its objects (never the newest verified one)",
		Flags: func(fs *flag.FlagSet) {
			f.bind(fs)
			f.bindBackupStore(fs)
		},
		Run: func(ctx context.Context, env *cli.Env, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("delete-backup takes one backup NAME (see list-backups): %w", cli.ErrUsage)
			}
			if err := backup.ValidateName(args[0]); err != nil {
				return fmt.Errorf("%v: %w", err, cli.ErrUsage)
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
			out, err := DeleteBackup(ctx, bst, l, args[0])
			if err != nil {
				return err
			}
			return cli.Print(env.Stdout, f.out, out, func(w io.Writer) error {
				fmt.Fprintf(w, "deleted %s backup %s from %s (every version of its objects)\n", out.Was, out.Name, out.Store)
				if out.OrphanedSegments > 0 {
					fmt.Fprintf(w, "warning: %d delta segments continue it; point-in-time restores through them are no longer possible\n", out.OrphanedSegments)
				}
				return nil
			})
		},
	}
}

// DeleteBackup deletes full backup name from st, as retention would: meta
// object first, every version. It refuses the backup retention protects
// (the newest verified one, or the newest one while none is verified),
// naming why, and a name that is not there.
func DeleteBackup(ctx context.Context, st store.Store, l control.Layout, name string) (BackupDeleted, error) {
	out := BackupDeleted{Name: name, Store: st.URL()}
	inv, invalid, err := backup.ReadInventory(ctx, st, l)
	if err != nil {
		return out, err
	}
	switch {
	case slices.ContainsFunc(inv.Fulls, func(m backup.Meta) bool { return m.Name == name }):
		out.Was = "complete"
		if p, verified, ok := backup.Protected(inv.Fulls, inv.Verified); ok && p.Name == name {
			why := "the newest full backup, and no backup is known verified"
			if verified {
				why = "the newest verified full backup"
			}
			return out, fmt.Errorf("backup %s is %s: a restore needs one good backup, so neither retention nor delete-backup deletes it (take a newer one with backup-now first); nothing deleted: %w", name, why, ErrProtectedBackup)
		}
	case slices.Contains(inv.Incomplete, name):
		out.Was = "incomplete"
	case slices.ContainsFunc(invalid, func(i backup.Invalid) bool { return i.Name == name }):
		out.Was = "unusable"
	default:
		return out, fmt.Errorf("backup %s is not in %s (see list-backups): %w", name, store.JoinURL(st.URL(), backup.FullPrefix(l)), backup.ErrNoBackup)
	}
	segs, err := backup.ListSegments(ctx, st, l)
	if err != nil {
		return out, err
	}
	for _, s := range segs.Segments {
		if s.Base == name {
			out.OrphanedSegments++
		}
	}
	if err := backup.DeleteFull(ctx, st, l, name); err != nil {
		return out, err
	}
	return out, nil
}
