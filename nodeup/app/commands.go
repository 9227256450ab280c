package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/kopsnode/agents/nodeup/fsroot"
	"github.com/kopsnode/agents/nodeup/model"
	"github.com/kopsnode/agents/nodeup/nodecheck"
	"github.com/kopsnode/agents/pkg/cli"
	"github.com/kopsnode/agents/pkg/logging"
)

// NewApp returns the nodeup binary's commands. openStore opens the state
// store by URL (main passes the storeurl opener).
func NewApp(openStore StoreOpener) *cli.App {
	return &cli.App{
		Name:    "nodeup",
		Summary: "converge this node from the state store",
		Commands: []*cli.Command{
			applyCommand(openStore),
			statusCommand(),
			bootstrapCommand(),
			renderCommand(openStore),
		},
	}
}

func bindBoot(fs *flag.FlagSet, bc *BootConfig) {
	fs.StringVar(&bc.Store, "store", "", "state store URL (file:///..., s3://bucket/prefix, gs://bucket/prefix)")
	fs.StringVar(&bc.Cluster, "cluster", "", "cluster name")
	fs.StringVar(&bc.Group, "group", "", "instance group name")
	fs.StringVar(&bc.ConfigHash, "config-hash", "", "pinned sha256 of the node configuration file")
	fs.BoolVar(&bc.FollowUpdates, "follow-updates", false, "apply a node configuration whose hash differs from the pinned one")
	fs.StringVar(&bc.StoreEndpoint, "store-endpoint", "", "S3-compatible endpoint URL")
	fs.StringVar(&bc.StoreRegion, "store-region", "", "S3 region")
	fs.BoolVar(&bc.StorePathStyle, "store-path-style", false, "S3 path-style addressing")
}

func applyCommand(openStore StoreOpener) *cli.Command {
	var (
		bc       BootConfig
		bootFile string
		dryRun   bool
		logOpts  logging.Options
		workers  int
		taskTO   time.Duration
		storeTO  time.Duration
	)
	return &cli.Command{
		Name:    "apply",
		Summary: "converge the node (or print the plan with --dry-run)",
		Flags: func(fs *flag.FlagSet) {
			bindBoot(fs, &bc)
			fs.StringVar(&bootFile, "boot-config", "", "boot configuration file written by the bootstrap script (flags win over it)")
			fs.StringVar(&bc.Root, "root", "", "apply under this directory instead of / (image builds, tests)")
			fs.StringVar(&bc.Phase, "phase", "", "bake (packages, assets), boot (configuration, units) or all (default)")
			fs.BoolVar(&dryRun, "dry-run", false, "print the plan as a diff; change nothing")
			logOpts.AddFlags(fs)
			fs.IntVar(&workers, "workers", 4, "tasks run in parallel")
			fs.DurationVar(&taskTO, "task-timeout", 5*time.Minute, "deadline of each task over all its retries")
			fs.DurationVar(&storeTO, "store-timeout", 5*time.Minute, "deadline for reading the node configuration")
		},
		Run: func(ctx context.Context, env *cli.Env, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected arguments %q: %w", args, cli.ErrUsage)
			}
			log, err := logging.New(env.Stderr, logOpts)
			if err != nil {
				return fmt.Errorf("%w: %w", err, cli.ErrUsage)
			}
			opts := Options{BootConfig: bc, DryRun: dryRun, Out: env.Stdout, Log: log, OpenStore: openStore, StoreTimeout: storeTO}
			if bootFile != "" {
				fb, err := LoadBootConfig(bootFile)
				if err != nil {
					return err
				}
				opts.BootConfig.Merge(fb)
			}
			opts.Engine.Workers = workers
			opts.Engine.TaskTimeout = taskTO
			_, err = Apply(ctx, opts)
			if errors.Is(err, errUsage) {
				return fmt.Errorf("%w: %w", err, cli.ErrUsage)
			}
			return err
		},
	}
}

func statusCommand() *cli.Command {
	var root, out string
	var checkTO time.Duration
	return &cli.Command{
		Name:    "status",
		Summary: "print the last run's result (failed tasks first, with their errors) and why the node has or has not joined",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&root, "root", "/", "root the node was converged under")
			fs.StringVar(&out, "o", "text", "output format: text or json")
			fs.DurationVar(&checkTO, "check-timeout", nodecheck.DefaultTimeout, "deadline of each node check (units, API name, /readyz, CSRs, Node)")
		},
		Run: func(ctx context.Context, env *cli.Env, args []string) error {
			f, err := fsroot.New(root)
			if err != nil {
				return err
			}
			st, err := ReadStatus(f)
			if err != nil {
				return err
			}
			st.SortTasks()
			checks := NodeChecks(ctx, f, st, checkTO)
			rep := &StatusReport{Status: st, Checks: &checks}
			if err := cli.Print(env.Stdout, out, rep, rep.Human); err != nil {
				return err
			}
			if st.Result != "converged" {
				return errors.New("the last run did not converge")
			}
			return nil
		},
	}
}

type listFlag struct{ v *[]string }

func (l listFlag) String() string {
	if l.v == nil {
		return ""
	}
	return strings.Join(*l.v, ",")
}
func (l listFlag) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l.v = append(*l.v, p)
		}
	}
	return nil
}

func bootstrapCommand() *cli.Command {
	var o BootstrapOptions
	return &cli.Command{
		Name:    "bootstrap-script",
		Summary: "render the userdata shell script that installs and starts nodeup",
		Flags: func(fs *flag.FlagSet) {
			// Each run parses into fresh options: a repeated flag appends,
			// so a second run of the same App would see the first's URLs.
			o = BootstrapOptions{}
			bindBoot(fs, &o.Boot)
			fs.Var(listFlag{&o.NodeupURLs}, "nodeup-url", "mirror URL of the nodeup binary (repeat or comma-separate; tried in order)")
			fs.StringVar(&o.NodeupSHA256, "nodeup-sha256", "", "sha256 of the nodeup binary")
			fs.StringVar(&o.BootConfigPath, "boot-config-path", model.DefaultBootConfig, "where the script writes the boot configuration")
			fs.IntVar(&o.Attempts, "attempts", 10, "rounds over all mirrors before giving up")
			fs.IntVar(&o.RetryDelay, "retry-delay", 5, "first pause between rounds, seconds (doubles up to 60)")
		},
		Run: func(ctx context.Context, env *cli.Env, args []string) error {
			s, err := RenderBootstrapScript(o)
			if err != nil {
				return fmt.Errorf("%w: %w", err, cli.ErrUsage)
			}
			_, err = io.WriteString(env.Stdout, s)
			return err
		},
	}
}
