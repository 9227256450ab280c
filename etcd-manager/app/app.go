// Package app holds the commands of the etcd-manager and etcd-manager-ctl
// binaries, so that their mains stay thin and the commands are testable.
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

	"github.com/kopsnode/agents/etcd-manager/identity"
	"github.com/kopsnode/agents/etcd-manager/manager"
	"github.com/kopsnode/agents/etcd-manager/runconfig"
	"github.com/kopsnode/agents/pkg/cli"
	"github.com/kopsnode/agents/pkg/logging"
	"github.com/kopsnode/agents/pkg/nodeaddr"
	"github.com/kopsnode/agents/pkg/observe"
	"github.com/kopsnode/agents/pkg/store/storeurl"
)

// EtcdManager returns the etcd-manager binary.
func EtcdManager() *cli.App {
	return &cli.App{
		Name:     "etcd-manager",
		Summary:  "form and run an etcd cluster with its peers",
		Commands: []*cli.Command{runCommand(), statusCommand()},
	}
}

// DefaultMetricsAddr is where `run` serves /healthz, /metrics and /status
// for an etcd cluster, and where `status` asks.
func DefaultMetricsAddr(etcdCluster string) string {
	if etcdCluster == "events" {
		return "127.0.0.1:3992"
	}
	return "127.0.0.1:3991"
}

// runCommand is `etcd-manager run`; its flags are runconfig.Config, which
// nodeup renders into the unit.
func runCommand() *cli.Command {
	var f runconfig.Config
	return &cli.Command{
		Name:    "run",
		Summary: "run the manager of one etcd cluster on this node",
		Flags: func(fs *flag.FlagSet) {
			f = runconfig.DefaultConfig() // each run starts from the defaults
			f.AddFlags(fs)
		},
		Run: func(ctx context.Context, env *cli.Env, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected arguments %q: %w", args, cli.ErrUsage)
			}
			logger, err := logging.New(env.Stderr, f.Log)
			if err != nil {
				return fmt.Errorf("%v: %w", err, cli.ErrUsage)
			}
			if err := f.Validate(); err != nil {
				return fmt.Errorf("%v: %w", err, cli.ErrUsage)
			}
			cfg, err := f.Manager()
			if err != nil {
				return fmt.Errorf("%v: %w", err, cli.ErrUsage)
			}
			if cfg.ID == "" && cfg.DataDir != "" {
				// One member identity: the slot of the volume mounted here.
				if cfg.ID, err = identity.FromVolume(cfg.DataDir, cfg.ClusterName, cfg.EtcdCluster); err != nil {
					return err
				}
			}
			if cfg.Address == "" {
				ip, err := nodeaddr.Primary()
				if err != nil {
					return fmt.Errorf("--address not given and %w", err)
				}
				cfg.Address = ip.String()
				logger.Info("using the default route's source address", "address", cfg.Address)
			}
			opts, err := f.Store.Options()
			if err != nil {
				return err
			}
			opts.Logger = logger
			st, err := storeurl.Open(ctx, f.Store.URL, opts)
			if err != nil {
				return fmt.Errorf("--store: %w", err)
			}
			defer st.Close()
			cfg.Store = st
			if f.BackupStore != "" {
				bst, err := storeurl.Open(ctx, f.BackupStore, opts)
				if err != nil {
					return fmt.Errorf("--backup-store: %w", err)
				}
				defer bst.Close()
				cfg.Backups.Store = bst
			}
			if cfg.Discovery, err = f.NewDiscovery(st); err != nil {
				return fmt.Errorf("%v: %w", err, cli.ErrUsage)
			}
			reg := observe.NewRegistry()
			cfg.MetricsRegistry = reg
			cfg.Logger = logger
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("%v: %w", err, cli.ErrUsage)
			}
			m, err := manager.Start(ctx, cfg)
			if err != nil {
				return err
			}
			addr := f.MetricsAddr
			if addr == "" {
				addr = DefaultMetricsAddr(cfg.EtcdCluster)
			}
			obs, err := observe.Start(observe.Config{
				Addr: addr, Registry: reg, Logger: logger, Health: m.Health,
				Status: func(ctx context.Context) (any, error) { return m.Status(ctx) },
			})
			if err != nil {
				_ = m.Close()
				return err
			}
			<-ctx.Done()
			logger.Info("shutting down")
			return errors.Join(obs.Close(), m.Close())
		},
	}
}

func statusCommand() *cli.Command {
	var addr, out, etcdCluster string
	return &cli.Command{
		Name:    "status",
		Summary: "show the etcd cluster as the local etcd-manager sees it",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&addr, "addr", "", "the manager's metrics address (default by --etcd-cluster)")
			fs.StringVar(&etcdCluster, "etcd-cluster", "main", "etcd cluster name, for the default address")
			fs.StringVar(&out, "o", "text", "output format: text or json")
		},
		Run: func(ctx context.Context, env *cli.Env, args []string) error {
			if addr == "" {
				addr = DefaultMetricsAddr(etcdCluster)
			}
			st, err := FetchStatus(ctx, addr)
			if err != nil {
				return err
			}
			return cli.Print(env.Stdout, out, st, func(w io.Writer) error { return PrintStatus(w, st) })
		},
	}
}

// FetchStatus reads http://addr/status.
func FetchStatus(ctx context.Context, addr string) (manager.Status, error) {
	var st manager.Status
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := observe.FetchStatus(ctx, nil, addr, "etcd-manager run", &st)
	return st, err
}

// PrintStatus writes the human form of a status.
func PrintStatus(w io.Writer, st manager.Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	role := "follower"
	if st.IsLeader {
		role = "leader"
	}
	fmt.Fprintf(tw, "instance:\t%s (%s)\n", st.ID, role)
	fmt.Fprintf(tw, "etcd cluster:\t%s\n", st.EtcdCluster)
	fmt.Fprintf(tw, "leader:\t%s (term %d)\n", orDash(st.Leader), st.LeaderTerm)
	if st.Spec != nil {
		fmt.Fprintf(tw, "spec:\t%d members, etcd %s\n", st.Spec.MemberCount, st.Spec.EtcdVersion)
	} else {
		fmt.Fprintf(tw, "spec:\t-\n")
	}
	if st.EtcdVersion != "" {
		fmt.Fprintf(tw, "running version:\t%s\n", st.EtcdVersion)
	}
	etcd := "not running"
	if st.Local.EtcdRunning {
		etcd = "running, unhealthy"
		if st.Local.EtcdHealthy {
			etcd = "running, healthy"
		}
		if st.Local.EtcdLearner {
			etcd += ", learner"
		}
	}
	fmt.Fprintf(tw, "local etcd:\t%s\n", etcd)
	if !st.LastReconcile.IsZero() {
		fmt.Fprintf(tw, "last reconcile:\t%s ago\n", time.Since(st.LastReconcile).Round(time.Second))
	}
	if st.LastError != "" {
		fmt.Fprintf(tw, "last error:\t%s\n", st.LastError)
	}
	if b := st.Backups; b != nil {
		last := "none known"
		if g := b.LastGood; g != nil {
			last = fmt.Sprintf("%s (%s ago, revision %d)", g.Name, time.Since(g.Started).Round(time.Second), g.Revision)
		}
		fmt.Fprintf(tw, "last backup:\t%s\n", last)
		if b.LastError != "" {
			fmt.Fprintf(tw, "backup error:\t%s: %s\n", b.FailureReason, b.LastError)
		}
		if !b.NextScheduled.IsZero() {
			fmt.Fprintf(tw, "next backup:\t%s (every %s, to %s)\n", b.NextScheduled.UTC().Format(time.RFC3339), b.Interval, b.Store)
		}
	}
	if d := st.Deltas; d != nil {
		rpo := "not following"
		if d.Following {
			rpo = fmt.Sprintf("%.1fs (durable as of %s)", d.RPOSeconds, d.DurableAsOf.UTC().Format(time.RFC3339Nano))
		}
		fmt.Fprintf(tw, "deltas:\tlast durable revision %d, RPO %s, chain of %d segment(s) from %s (every %s)\n", d.LastDurableRevision, rpo, d.ChainLength, d.ChainBase, d.Interval)
		if d.LastError != "" {
			fmt.Fprintf(tw, "delta error:\t%s: %s\n", d.FailureReason, d.LastError)
		}
	}
	printVerifyStatus(tw, st)
	printRetentionQuorum(tw, st)
	if a := st.APIServerClientCert; a != nil {
		cert := "none yet"
		if a.Serial != "" {
			cert = fmt.Sprintf("%s, serial %s, expires %s (in %s)", a.CommonName, a.Serial, a.NotAfter.UTC().Format(time.RFC3339), time.Until(a.NotAfter).Round(time.Second))
		}
		fmt.Fprintf(tw, "apiserver client cert:\t%s: %s\n", a.Dir, cert)
		if a.Error != "" {
			fmt.Fprintf(tw, "apiserver cert error:\t%s\n", a.Error)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Members) > 0 {
		fmt.Fprintln(w, "\nMEMBERS")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tID\tHEALTHY\tLEARNER\tPEER URLS")
		for _, m := range st.Members {
			fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%s\n", orDash(m.Name), m.ID, m.Healthy, m.Learner, strings.Join(m.PeerURLs, ","))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	fmt.Fprintln(w, "\nPEERS")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDRESS\tETCD\tHEALTHY\tDATA\tVERSION")
	for _, p := range st.Peers {
		data := "yes"
		if p.DataDirEmpty {
			data = "empty"
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%s\t%s\n", p.ID, p.ManagerAddr, p.EtcdRunning, p.EtcdHealthy, data, orDash(p.EtcdVersion))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
