package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/discovery"
	"github.com/kopsnode/agents/etcd-manager/leader"
	"github.com/kopsnode/agents/etcd-manager/restore"
	"github.com/kopsnode/agents/pkg/cli"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/storeurl"
)

// ctlFlags are the flags every etcd-manager-ctl command takes.
type ctlFlags struct {
	store, cluster, etcdCluster, out string
	// createRoot creates a missing file:// store directory (set-spec).
	createRoot bool
	// backupStore is where the backups are, when not the state store
	// (commands that read backups bind it).
	backupStore string
}

func (f *ctlFlags) bindBackupStore(fs *flag.FlagSet) {
	fs.StringVar(&f.backupStore, "backup-store", "", "store URL the backups are in, when not the state store (etcd-manager's --backup-store)")
}

// openBackups returns the store the backups are in: --backup-store, or
// st. The returned close releases a store it opened.
func (f *ctlFlags) openBackups(ctx context.Context, st store.Store) (store.Store, func(), error) {
	if f.backupStore == "" {
		return st, func() {}, nil
	}
	opts, err := storeurl.OptionsFromEnv()
	if err != nil {
		return nil, nil, err
	}
	bst, err := storeurl.Open(ctx, f.backupStore, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("--backup-store: %w", err)
	}
	return bst, func() { _ = bst.Close() }, nil
}

func (f *ctlFlags) bind(fs *flag.FlagSet) {
	fs.StringVar(&f.store, "store", "", "state store URL (file:///path, s3://bucket/prefix, gs://bucket/prefix); required")
	fs.StringVar(&f.cluster, "cluster-name", "", "Kubernetes cluster name; required")
	fs.StringVar(&f.etcdCluster, "etcd-cluster", "main", "etcd cluster name")
	fs.StringVar(&f.out, "o", "text", "output format: text or json")
}

func (f *ctlFlags) open(ctx context.Context) (store.Store, control.Layout, error) {
	l := control.Layout{Cluster: f.cluster, EtcdCluster: f.etcdCluster}
	if f.store == "" {
		return nil, l, fmt.Errorf("--store is required: %w", cli.ErrUsage)
	}
	if err := l.Validate(); err != nil {
		return nil, l, fmt.Errorf("--cluster-name/--etcd-cluster: %v: %w", err, cli.ErrUsage)
	}
	opts, err := storeurl.OptionsFromEnv()
	if err != nil {
		return nil, l, err
	}
	opts.FileCreateRoot = f.createRoot
	st, err := storeurl.Open(ctx, f.store, opts)
	if err != nil {
		return nil, l, fmt.Errorf("--store: %w", err)
	}
	return st, l, nil
}

// EtcdManagerCtl returns the etcd-manager-ctl binary.
func EtcdManagerCtl() *cli.App {
	return &cli.App{
		Name:    "etcd-manager-ctl",
		Summary: "read and write the etcd-manager control area of the state store",
		Commands: []*cli.Command{
			getSpecCommand(), setSpecCommand(), ctlStatusCommand(), queueCommand(),
			listBackupsCommand(), backupNowCommand(), verifyBackupCommand(), restoreBackupCommand(), restoreToCommand(),
			listCommandsCommand(), deleteCommandCommand(), deleteBackupCommand(), recoverQuorumCommand(),
		},
	}
}

func getSpecCommand() *cli.Command {
	f := &ctlFlags{}
	return &cli.Command{
		Name: "get-spec", Summary: "print the desired etcd cluster spec",
		Flags: f.bind,
		Run: func(ctx context.Context, env *cli.Env, args []string) error {
			st, l, err := f.open(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			spec, err := control.ReadSpec(ctx, st, l)
			if err != nil {
				return err
			}
			return cli.Print(env.Stdout, f.out, spec, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "members: %d\netcd version: %s\n", spec.MemberCount, spec.EtcdVersion)
				return err
			})
		},
	}
}

func setSpecCommand() *cli.Command {
	f := &ctlFlags{createRoot: true}
	var members int
	var version string
	return &cli.Command{
		Name: "set-spec", Summary: "write the desired etcd cluster spec (member count, etcd version)",
		Flags: func(fs *flag.FlagSet) {
			f.bind(fs)
			fs.IntVar(&members, "members", 0, "member count: 1, 3 or 5 (default: keep the current one)")
			fs.StringVar(&version, "version", "", "etcd version such as 3.6.16 (default: keep the current one)")
		},
		Run: func(ctx context.Context, env *cli.Env, args []string) error {
			st, l, err := f.open(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			spec, err := control.ReadSpec(ctx, st, l)
			if err != nil && !errors.Is(err, control.ErrNoSpec) {
				// An invalid spec in the store is replaced only when both
				// fields are given.
				if members == 0 || version == "" {
					return fmt.Errorf("%w (give both --members and --version to replace it)", err)
				}
			}
			if members != 0 {
				spec.MemberCount = members
			}
			if version != "" {
				spec.EtcdVersion = version
			}
			if err := spec.Validate(); err != nil {
				return fmt.Errorf("%v: %w", err, cli.ErrUsage)
			}
			if err := control.WriteSpec(ctx, st, l, spec); err != nil {
				return err
			}
			_, err = fmt.Fprintf(env.Stdout, "wrote %s: %d members, etcd %s\n", store.JoinURL(st.URL(), l.SpecKey()), spec.MemberCount, spec.EtcdVersion)
			return err
		},
	}
}

// ControlStatus is what etcd-manager-ctl status shows.
type ControlStatus struct {
	Spec      *control.Spec     `json:"spec,omitempty"`
	SpecError string            `json:"specError,omitempty"`
	Created   *control.Created  `json:"created,omitempty"`
	Leader    *leader.Record    `json:"leader,omitempty"`
	Peers     []discovery.Peer  `json:"peers"`
	Commands  []control.Command `json:"pendingCommands"`
	// LastBackup is the newest complete full backup; BackupError says why
	// the backups could not be listed.
	LastBackup  *backup.Meta `json:"lastBackup,omitempty"`
	BackupError string       `json:"backupError,omitempty"`
	// Restore is the restore in progress, if any (its persisted state).
	Restore *restore.State `json:"restore,omitempty"`
}

func ctlStatusCommand() *cli.Command {
	f := &ctlFlags{}
	return &cli.Command{
		Name: "status", Summary: "show the control area: spec, created marker, leader, registered peers, queued commands, the newest backup",
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
			cs, err := ReadControlStatus(ctx, st, l)
			if err != nil {
				return err
			}
			bst, closeBackups, err := f.openBackups(ctx, st)
			if err != nil {
				return err
			}
			defer closeBackups()
			// The backups are reported, not required: a backup store that
			// does not answer does not hide the control area.
			if ls, err := backup.List(ctx, bst, l); err != nil {
				cs.BackupError = err.Error()
			} else if len(ls.Backups) > 0 {
				cs.LastBackup = &ls.Backups[0]
			}
			return cli.Print(env.Stdout, f.out, cs, func(w io.Writer) error { return printControlStatus(w, cs) })
		},
	}
}

// ReadControlStatus reads the control area.
func ReadControlStatus(ctx context.Context, st store.Store, l control.Layout) (ControlStatus, error) {
	var cs ControlStatus
	if spec, err := control.ReadSpec(ctx, st, l); err == nil {
		cs.Spec = &spec
	} else {
		cs.SpecError = err.Error()
	}
	created, ok, err := control.ReadCreated(ctx, st, l)
	if err != nil {
		return cs, err
	}
	if ok {
		cs.Created = &created
	}
	// Peers "live" as a registry reader that just started sees them: every
	// record present. The instances' own views are in `etcd-manager status`.
	infos, err := st.List(ctx, l.PeersPrefix())
	if err != nil {
		return cs, err
	}
	reg := discovery.NewStoreRegistry(st, l.PeersPrefix(), 1<<62, nil)
	if len(infos) > 0 {
		if cs.Peers, err = reg.Peers(ctx); err != nil {
			return cs, err
		}
	}
	if cs.Peers == nil {
		cs.Peers = []discovery.Peer{}
	}
	lease := leader.New(st, l.LeaderKey(), "etcd-manager-ctl", 1, nil)
	if rec, err := lease.Observe(ctx); err == nil && rec.Term > 0 {
		cs.Leader = &rec
	} else if err != nil {
		return cs, err
	}
	if cs.Commands, err = control.PendingCommands(ctx, st, l); err != nil {
		return cs, err
	}
	if cs.Commands == nil {
		cs.Commands = []control.Command{}
	}
	if s, ok, err := restore.Active(ctx, st, l); err != nil {
		return cs, err
	} else if ok {
		cs.Restore = &s
	}
	return cs, nil
}

func printControlStatus(w io.Writer, cs ControlStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if cs.Spec != nil {
		fmt.Fprintf(tw, "spec:\t%d members, etcd %s\n", cs.Spec.MemberCount, cs.Spec.EtcdVersion)
	} else {
		fmt.Fprintf(tw, "spec:\t%s\n", cs.SpecError)
	}
	if cs.Created != nil {
		fmt.Fprintf(tw, "cluster:\tcreated %s by %s (token %s, etcd %s, %d initial members)\n",
			cs.Created.Created.Format("2006-01-02 15:04:05Z07:00"), cs.Created.CreatedBy, cs.Created.ClusterToken, cs.Created.EtcdVersion, len(cs.Created.InitialMembers))
	} else {
		fmt.Fprintf(tw, "cluster:\tnot created yet\n")
	}
	if cs.Leader != nil && cs.Leader.Holder != "" {
		fmt.Fprintf(tw, "leader:\t%s (term %d, renewed %s)\n", cs.Leader.Holder, cs.Leader.Term, cs.Leader.Renewed.Format("15:04:05"))
	} else {
		fmt.Fprintf(tw, "leader:\tnone\n")
	}
	for _, p := range cs.Peers {
		fmt.Fprintf(tw, "peer:\t%s\t%s\n", p.ID, p.ManagerAddr)
	}
	for _, c := range cs.Commands {
		fmt.Fprintf(tw, "queued command:\t%s\t%s\n", c.ID, c.Kind)
	}
	if r := cs.Restore; r != nil {
		last := ""
		if n := len(r.History); n > 0 {
			last = ": " + r.History[n-1].Message
		}
		fmt.Fprintf(tw, "restore in progress:\t%s (%s) phase %s, leader %s term %d%s\n", r.CommandID, r.Target, r.Phase, r.Owner.LeaderID, r.Owner.LeaderTerm, last)
	}
	switch {
	case cs.BackupError != "":
		fmt.Fprintf(tw, "last backup:\t%s\n", cs.BackupError)
	case cs.LastBackup != nil:
		b := cs.LastBackup
		fmt.Fprintf(tw, "last backup:\t%s (%s ago, revision %d, %d keys, by %s term %d)\n", b.Name, time.Since(b.Started).Round(time.Second), b.Revision, b.KeyCount, b.Writer.LeaderID, b.Writer.LeaderTerm)
	default:
		fmt.Fprintf(tw, "last backup:\tnone\n")
	}
	return tw.Flush()
}

func queueCommand() *cli.Command {
	f := &ctlFlags{}
	var kind, id string
	var args stringList
	return &cli.Command{
		Name: "queue-command", Summary: "queue a command for the leader (runs at most once)",
		Flags: func(fs *flag.FlagSet) {
			f.bind(fs)
			fs.StringVar(&kind, "kind", "", "command kind; required")
			fs.StringVar(&id, "id", "", "command id (default: time and kind); ids sort in execution order")
			fs.Var(&args, "arg", "key=value argument, repeatable")
		},
		Run: func(ctx context.Context, env *cli.Env, rest []string) error {
			if kind == "" {
				return fmt.Errorf("--kind is required: %w", cli.ErrUsage)
			}
			st, l, err := f.open(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			now := time.Now().UTC()
			if id == "" {
				id = now.Format("20060102T150405.000Z") + "-" + kind
			}
			c := control.Command{ID: id, Kind: kind, Created: now}
			for _, a := range args {
				k, v, ok := strings.Cut(a, "=")
				if !ok || k == "" {
					return fmt.Errorf("--arg %q is not key=value: %w", a, cli.ErrUsage)
				}
				if c.Args == nil {
					c.Args = map[string]string{}
				}
				c.Args[k] = v
			}
			if err := control.QueueCommand(ctx, st, l, c); err != nil {
				return err
			}
			_, err = fmt.Fprintf(env.Stdout, "queued command %s (%s)\n", id, kind)
			return err
		},
	}
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
