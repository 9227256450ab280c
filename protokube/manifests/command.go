package manifests

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kopsnode/agents/pkg/cli"
	"github.com/kopsnode/agents/pkg/logging"
	"github.com/kopsnode/agents/pkg/observe"
	"github.com/kopsnode/agents/pkg/store/storeurl"
)

// Command is `protokube manifests`: run the applier until signalled.
func Command() *cli.Command {
	var cfg Config
	return &cli.Command{
		Name:    "manifests",
		Summary: "apply the cluster's system manifests (node bootstrap token and RBAC, CoreDNS) once the API answers, and keep them applied",
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
			opts, err := cfg.Store.Options()
			if err != nil {
				return err
			}
			opts.Logger = log
			st, err := storeurl.Open(ctx, cfg.Store.URL, opts)
			if err != nil {
				return fmt.Errorf("--store: %w", err)
			}
			defer st.Close()
			d, err := Start(ctx, cfg, Deps{Logger: log, Store: st})
			if err != nil {
				return err
			}
			log.Info("applying system manifests", "config", cfg.ConfigFile, "kubeconfig", cfg.Kubeconfig, "status", d.StatusAddr())
			<-ctx.Done()
			log.Info("stopping manifests")
			return d.Close()
		},
	}
}

// StatusCommand is `protokube manifests-status`: print what the applier
// applied, from its /status endpoint.
func StatusCommand() *cli.Command {
	var addr, out string
	return &cli.Command{
		Name:    "manifests-status",
		Summary: "show the system manifests protokube applied: each object, its last result and error",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&addr, "address", DefaultStatusAddr, "address of the applier's status endpoint (its --status-listen)")
			fs.StringVar(&out, "o", "text", "output format: text or json")
		},
		Run: func(ctx context.Context, env *cli.Env, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected arguments %q: %w", args, cli.ErrUsage)
			}
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

// FetchStatus reads the status document from the applier's endpoint.
func FetchStatus(ctx context.Context, c *http.Client, addr string) (Status, error) {
	var st Status
	err := observe.FetchStatus(ctx, c, addr, "protokube manifests", &st)
	return st, err
}

// PrintStatus writes the human form of a status document.
func PrintStatus(w io.Writer, st Status) error {
	state := "not ready"
	if st.Ready {
		state = "ready"
	}
	api := "not answering"
	if st.APIReady {
		api = "ready"
	}
	fmt.Fprintf(w, "cluster %s: %s; API server %s %s; %d passes", st.Cluster, state, orDash(st.APIServer), api, st.Passes)
	if !st.LastPass.IsZero() {
		fmt.Fprintf(w, ", last %s", st.LastPass.Format(time.RFC3339))
	}
	fmt.Fprintln(w)
	if st.Error != "" {
		fmt.Fprintf(w, "error: %s\n", st.Error)
	}
	for _, e := range st.InputErrors {
		fmt.Fprintf(w, "input not read (its objects left as they are): %s\n", e)
	}
	if t := st.BootstrapToken; t != nil {
		fmt.Fprintf(w, "node bootstrap token %s, expires %s; Secrets applied for %s", t.Current, orDash(formatTime(t.Expires)), strings.Join(t.Valid, ", "))
		if !t.LastRotation.IsZero() {
			fmt.Fprintf(w, "; last rotated here %s", t.LastRotation.Format(time.RFC3339))
		}
		fmt.Fprintf(w, "\n  %s\n", t.Decision)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "OBJECT\tRESULT\tCHANGES\tLAST CHANGED\tHASH\tERROR")
	for _, o := range st.Objects {
		changed := "-"
		if !o.LastChanged.IsZero() {
			changed = o.LastChanged.Format(time.RFC3339)
		}
		hash := o.Hash
		if len(hash) > 12 {
			hash = hash[:12]
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", o.Key(), o.Result, o.Changes, changed, hash, o.Error)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Pruned) > 0 {
		fmt.Fprintln(w, "\nPRUNED (no longer wanted)")
		for _, p := range st.Pruned {
			fmt.Fprintf(w, "  %s at %s\n", objectKey(p.Kind, p.Namespace, p.Name), p.At.Format(time.RFC3339))
		}
	}
	return nil
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
