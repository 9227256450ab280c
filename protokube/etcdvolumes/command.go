package etcdvolumes

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/kopsnode/agents/pkg/cli"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/logging"
	units "github.com/kopsnode/agents/systemd-units"
)

// ErrNotReady is returned by --once when a member is not ready; the status
// has been printed.
var ErrNotReady = errors.New("not every etcd member is ready")

// Command is `protokube etcd-volumes`.
func Command() *cli.Command { return command(nil) }

// command takes the systemd manager to use (nil: D-Bus), so tests can run
// the whole command against a fake.
func command(mgr units.Manager) *cli.Command {
	var cfg Config
	return &cli.Command{
		Name:    "etcd-volumes",
		Summary: "hold a member slot per etcd cluster, mount its volume at /mnt/etcd/<name>, then start etcd-manager-<name>.service",
		Flags: func(fs *flag.FlagSet) {
			cfg = DefaultConfig()
			cfg.AddFlags(fs)
		},
		Run: func(ctx context.Context, env *cli.Env, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected arguments %q: %w", args, cli.ErrUsage)
			}
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("%v: %w", err, cli.ErrUsage)
			}
			log, err := logging.New(env.Stderr, cfg.Log)
			if err != nil {
				return fmt.Errorf("%v: %w", err, cli.ErrUsage)
			}
			node, err := config.LoadNodeConfigFile(cfg.ConfigFile)
			if err != nil {
				return err
			}
			if node.Spec.Role != config.RoleControlPlane {
				log.Warn("the node configuration's role is not control-plane", "config", cfg.ConfigFile, "role", node.Spec.Role)
			}
			deps := Deps{Logger: log, Manager: mgr}
			if cfg.Once {
				return runOnce(ctx, env, cfg, node, deps)
			}
			d, err := Start(ctx, cfg, node, deps)
			if err != nil {
				return err
			}
			<-ctx.Done()
			log.Info("stopping etcd-volumes")
			return d.Close()
		},
	}
}

func runOnce(ctx context.Context, env *cli.Env, cfg Config, node *config.NodeConfig, deps Deps) error {
	if deps.Manager == nil {
		m := units.NewDBus()
		defer m.Close()
		deps.Manager = m
	}
	if deps.Store == nil {
		st, err := cfg.Store.Open(ctx)
		if err != nil {
			return err
		}
		defer st.Close()
		deps.Store = st
	}
	r, err := NewReconciler(ctx, cfg, node, deps)
	if err != nil {
		return err
	}
	st := r.Pass(ctx)
	if err := cli.Print(env.Stdout, cfg.Output, st, func(w io.Writer) error { return PrintStatus(w, st) }); err != nil {
		return err
	}
	if !st.Ready {
		return ErrNotReady
	}
	return nil
}

// PrintStatus writes the human form of the status.
func PrintStatus(w io.Writer, st Status) error {
	ready := "not ready"
	if st.Ready {
		ready = "ready"
	}
	fmt.Fprintf(w, "cluster %s, machine %s, volume provider %s: %s\n", st.Cluster, st.Machine, st.Provider, ready)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ETCD CLUSTER\tSLOT\tTARGET\tDEVICE\tMOUNTED\tUNIT\tSTATE\tERROR")
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	for _, m := range st.EtcdClusters {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%t\t%s\t%s\t%s\n", m.EtcdCluster, dash(m.Slot), m.Target, dash(m.Device), m.Mounted, m.Unit, m.UnitState, m.Error)
	}
	return tw.Flush()
}
