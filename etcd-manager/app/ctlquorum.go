package app

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/quorum"
	"github.com/kopsnode/agents/etcd-manager/restore"
	"github.com/kopsnode/agents/pkg/cli"
)

// ReportWindow is how recent an instance's quorum-loss report must be
// for recover-quorum to count the instance as a survivor.
const ReportWindow = 2 * time.Minute

// QuorumRecovery is what `recover-quorum -o json` prints.
type QuorumRecovery struct {
	Plan quorum.Plan `json:"plan"`
	// Queued is the command queued with --yes ("" without).
	Queued string `json:"queued,omitempty"`
	Kind   string `json:"kind,omitempty"`
}

func recoverQuorumCommand() *cli.Command {
	f := &ctlFlags{}
	var fromMember, fromBackup string
	var yes bool
	return &cli.Command{
		Name:    "recover-quorum",
		Summary: "rebuild an etcd cluster that lost a majority of its members for good, from the surviving member that got furthest or from a backup; prints the plan, changes nothing without --yes",
		Flags: func(fs *flag.FlagSet) {
			f.bind(fs)
			f.bindBackupStore(fs)
			fs.StringVar(&fromMember, "from-member", "", "recover from this surviving member (default: the one with the highest raft index)")
			fs.StringVar(&fromBackup, "from-backup", "", "recover from this full backup, or latest (a restore: needs a quorum of etcd-manager instances, so start the replacement machines)")
			fs.BoolVar(&yes, "yes", false, "queue the recovery (without it, only the plan is printed)")
		},
		Run: func(ctx context.Context, env *cli.Env, args []string) error {
			if len(args) != 0 {
				return fmt.Errorf("recover-quorum takes no arguments (use --from-member or --from-backup): %w", cli.ErrUsage)
			}
			if fromMember != "" && fromBackup != "" {
				return fmt.Errorf("--from-member and --from-backup exclude each other: %w", cli.ErrUsage)
			}
			if fromBackup != "" && fromBackup != "latest" {
				if err := backup.ValidateName(fromBackup); err != nil {
					return fmt.Errorf("--from-backup: %v: %w", err, cli.ErrUsage)
				}
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
			spec, err := control.ReadSpec(ctx, st, l)
			if err != nil {
				return err
			}
			created, ok, err := control.ReadCreated(ctx, st, l)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("no etcd cluster was created (%s is absent): nothing to recover", l.CreatedKey())
			}
			now := time.Now()
			reports, err := quorum.ReadReports(ctx, st, l, now.Add(-ReportWindow))
			if err != nil {
				return err
			}
			var newest *backup.Meta
			choice := quorum.Choice{Member: fromMember}
			if fromBackup != "" {
				ls, err := backup.List(ctx, bst, l)
				if err != nil {
					return err
				}
				for i, m := range ls.Backups {
					if fromBackup == m.Name || (fromBackup == "latest" && i == 0) {
						newest = &ls.Backups[i]
						break
					}
				}
				if newest == nil {
					return fmt.Errorf("--from-backup %s: no such complete backup in %s (see list-backups)", fromBackup, bst.URL())
				}
				choice.Backup = newest.Name
			} else if ls, err := backup.List(ctx, bst, l); err == nil && len(ls.Backups) > 0 {
				newest = &ls.Backups[0]
			}
			plan, err := quorum.MakePlan(spec.MemberCount, created.ClusterToken, reports, newest, choice)
			if err != nil {
				return fmt.Errorf("%w (survivors report themselves to %s while they see the quorum lost); nothing queued", err, st.URL())
			}
			out := QuorumRecovery{Plan: plan}
			switch {
			case !yes:
			case len(reports) == 0 && fromBackup == "":
				return fmt.Errorf("no instance reported a lost quorum in the last %s: the quorum may not be lost, or no survivor can reach the store; nothing queued", ReportWindow)
			case plan.Source == quorum.SourceNone:
				return fmt.Errorf("%s; nothing queued", plan.Reason)
			case plan.Source == quorum.SourceMember:
				c := control.Command{ID: now.UTC().Format("20060102T150405.000Z") + "-" + control.KindRecoverQuorum, Kind: control.KindRecoverQuorum,
					Args: map[string]string{"member": plan.Member}, Created: now.UTC()}
				if err := control.QueueCommand(ctx, st, l, c); err != nil {
					return err
				}
				out.Queued, out.Kind = c.ID, c.Kind
			case plan.Source == quorum.SourceBackup:
				t := restore.Target{Backup: plan.Backup}
				c := control.Command{ID: now.UTC().Format("20060102T150405.000Z") + "-" + t.Kind(), Kind: t.Kind(), Args: t.Args(), Created: now.UTC()}
				if err := control.QueueCommand(ctx, st, l, c); err != nil {
					return err
				}
				out.Queued, out.Kind = c.ID, c.Kind
			}
			return cli.Print(env.Stdout, f.out, out, func(w io.Writer) error { return printQuorumRecovery(w, out, spec) })
		},
	}
}

func printQuorumRecovery(w io.Writer, out QuorumRecovery, spec control.Spec) error {
	p := out.Plan
	fmt.Fprintf(w, "members wanted: %d, a quorum is %d; survivors reporting a lost quorum: %d\n", spec.MemberCount, p.Needed, len(p.Survivors))
	for _, r := range p.Survivors {
		data := "holds the cluster's data"
		if r.DataDirEmpty || r.ClusterToken == "" {
			data = "no data"
		}
		fmt.Fprintf(w, "  %s: %s, raft index %d, revision %d, reported %s\n", r.ID, data, r.RaftIndex, r.Revision, r.Observed.Format(time.RFC3339))
	}
	switch p.Source {
	case quorum.SourceMember:
		fmt.Fprintf(w, "source: member %s (raft index %d, revision %d); its data is kept aside before etcd restarts it with --force-new-cluster\n", p.Member, p.RaftIndex, p.Revision)
	case quorum.SourceBackup:
		fmt.Fprintf(w, "source: full backup %s (revision %d, taken %s), restored by the leader\n", p.Backup, p.BackupRevision, p.BackupStarted.Format(time.RFC3339))
	default:
		fmt.Fprintf(w, "source: none: %s\n", p.Reason)
	}
	for _, d := range p.Discards {
		fmt.Fprintf(w, "discards: %s\n", d)
	}
	if out.Queued == "" {
		_, err := fmt.Fprintln(w, "nothing changed; run again with --yes to queue this recovery")
		return err
	}
	_, err := fmt.Fprintf(w, "queued command %s (%s); `etcd-manager-ctl list-commands` shows its result\n", out.Queued, out.Kind)
	return err
}
