package gossipd

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/kopsnode/agents/pkg/cli"
	"github.com/kopsnode/agents/pkg/logging"
	"github.com/kopsnode/agents/pkg/observe"
)

// GossipCommand is `protokube gossip`: run the gossip daemon until signalled.
func GossipCommand() *cli.Command {
	var cfg Config
	return &cli.Command{
		Name:    "gossip",
		Summary: "run gossip membership, replicated records, cluster DNS and the /etc/hosts block",
		Flags: func(fs *flag.FlagSet) {
			cfg = DefaultConfig() // each run starts from the defaults
			cfg.AddFlags(fs)
		},
		Run: func(ctx context.Context, env *cli.Env, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected arguments %q: %w", args, cli.ErrUsage)
			}
			log, err := logging.New(env.Stderr, cfg.Log)
			if err != nil {
				return fmt.Errorf("%v: %w", err, cli.ErrUsage)
			}
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("%v: %w", err, cli.ErrUsage)
			}
			d, err := Start(ctx, cfg, Deps{Logger: log})
			if err != nil {
				if ctx.Err() != nil {
					// Stopped while starting (waiting for the keyring):
					// a clean stop, not a failure.
					log.Info("stopped before gossip started", "reason", err)
					return nil
				}
				log.Error("gossip did not start", "err", err)
				return err
			}
			<-ctx.Done()
			log.Info("stopping gossip")
			return d.Close()
		},
	}
}

// StatusCommand is `protokube status`: print the gossip daemon's status
// from its /status endpoint.
func StatusCommand() *cli.Command {
	var addr, out string
	return &cli.Command{
		Name:    "status",
		Summary: "show gossip members, their state, and the records with their versions",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&addr, "address", DefaultStatusAddr, "address of the daemon's status endpoint (its --status-listen)")
			fs.StringVar(&out, "o", "text", "output format: text or json")
		},
		Run: func(ctx context.Context, env *cli.Env, args []string) error {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			st, err := FetchStatus(ctx, http.DefaultClient, addr)
			if err != nil {
				return err
			}
			return cli.Print(env.Stdout, out, st, func(w io.Writer) error { return PrintStatus(w, st) })
		},
	}
}

// FetchStatus reads the status document from a daemon's endpoint.
func FetchStatus(ctx context.Context, c *http.Client, addr string) (Status, error) {
	var st Status
	err := observe.FetchStatus(ctx, c, addr, "protokube gossip", &st)
	return st, err
}

// PrintStatus writes the human form of a status document.
func PrintStatus(w io.Writer, st Status) error {
	fmt.Fprintf(w, "node %s at %s, cluster %s, zone %s", st.Node, st.Addr, st.Cluster, st.Zone)
	if st.DNS != "" {
		fmt.Fprintf(w, ", dns %s", st.DNS)
	}
	fmt.Fprintln(w)
	counts := map[string]int{}
	for _, m := range st.Members {
		counts[m.State]++
	}
	fmt.Fprintf(w, "\nMEMBERS (%d alive, %d dead)\n", counts["alive"], counts["dead"])
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tSTATE")
	for _, m := range st.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", m.Name, m.Addr, m.State)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nRECORDS (%d)\n", len(st.Records))
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tOWNER\tVALUE\tVERSION")
	for _, r := range st.Records {
		v := r.Value
		if r.Deleted {
			v = "(deleted)"
		}
		if !r.OwnerAlive {
			v += " (owner gone)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Key, r.Owner, v, r.Version)
	}
	tw.Flush()
	if st.Sync.HostsErr != "" {
		fmt.Fprintf(w, "\nhosts file %s: %s\n", st.Sync.HostsFile, st.Sync.HostsErr)
	}
	if p := st.PodNet; p != nil {
		rng := p.Range
		if rng == "" {
			rng = "(not allocated yet)"
		}
		fmt.Fprintf(w, "\nPOD NETWORK node %s, range %s via %s, %d passes\n", p.Node, rng, p.Via, p.Syncs)
		if p.CNIConfig != "" {
			fmt.Fprintf(w, "cni config %s\n", p.CNIConfig)
		}
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ROUTE\tVIA\tNODE")
		for _, r := range p.Routes {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Dst, r.Via, r.Owner)
		}
		tw.Flush()
		for _, sk := range p.Skipped {
			fmt.Fprintf(w, "not routed: record of %s: %s\n", sk.Owner, sk.Reason)
		}
		for _, part := range []string{"node", "cni", "record", "routes", "masquerade"} {
			if e, ok := p.Errors[part]; ok {
				fmt.Fprintf(w, "%s: %s\n", part, e)
			}
		}
	}
	return nil
}
