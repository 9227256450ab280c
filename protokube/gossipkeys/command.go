package gossipkeys

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/kopsnode/agents/gossip/membership"
	"github.com/kopsnode/agents/pkg/cli"
	"github.com/kopsnode/agents/pkg/store/storeurl"
)

// CommandName is the protokube command.
const CommandName = "gossip-keys"

type subcommand struct {
	name    string
	summary string
	usage   string
	flags   func(fs *flag.FlagSet, o *options)
	run     func(ctx context.Context, env *cli.Env, o *options, kr Keyring) error
}

type options struct {
	store              storeurl.Settings
	cluster, out, step string
}

func (o *options) common(fs *flag.FlagSet) {
	o.store.AddFlags(fs) // the same store flags as the daemons
	fs.StringVar(&o.cluster, "cluster", "", "cluster name (for example example.k8s.local); the keyring is <cluster>/secrets/gossip-keys")
	fs.StringVar(&o.out, "o", "text", "output format: text or json")
}

func (o *options) validate(needStep bool) error {
	var errs []error
	if o.store.URL == "" {
		errs = append(errs, errors.New("--store: required"))
	} else if err := o.store.Validate(); err != nil {
		errs = append(errs, err)
	}
	if o.cluster == "" || strings.Contains(o.cluster, "/") {
		errs = append(errs, fmt.Errorf("--cluster: %q must be a name without slashes", o.cluster))
	}
	if o.out != "text" && o.out != "json" && o.out != "" && o.out != "human" {
		errs = append(errs, fmt.Errorf("-o: %q is not one of text, json", o.out))
	}
	if needStep {
		if _, err := ParseStep(o.step); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func subcommands() []subcommand {
	return []subcommand{
		{
			name:    "create",
			summary: "write a keyring with one new random key, unless one exists (then change nothing)",
			usage:   "--store URL --cluster NAME [-o json]",
			flags:   func(fs *flag.FlagSet, o *options) { o.common(fs) },
			run:     runCreate,
		},
		{
			name:    "rotate",
			summary: "run one step of a key rotation: add, then use, then remove",
			usage:   "--store URL --cluster NAME --step add|use|remove [-o json]",
			flags: func(fs *flag.FlagSet, o *options) {
				o.common(fs)
				fs.StringVar(&o.step, "step", "", "rotation step: add (a new key every node accepts), use (make the newest key primary), remove (drop every non-primary key)")
			},
			run: runRotate,
		},
		{
			name:    "show",
			summary: "show the number of keys, the primary's fingerprint and the next rotation step",
			usage:   "--store URL --cluster NAME [-o json]",
			flags:   func(fs *flag.FlagSet, o *options) { o.common(fs) },
			run:     runShow,
		},
	}
}

// Command is `protokube gossip-keys create|rotate|show`: manage the gossip
// keyring in the state store. Key material is never printed.
func Command() *cli.Command {
	var b strings.Builder
	b.WriteString("create|rotate|show --store URL --cluster NAME [flags]\n\nSubcommands:\n")
	for _, s := range subcommands() {
		fmt.Fprintf(&b, "  %-8s %s\n", s.name, s.summary)
	}
	fmt.Fprintf(&b, "\nRun 'protokube %s SUBCOMMAND --help' for its flags. Keys are shown only by fingerprint\n(the first 8 hex digits of the SHA-256 of the key).", CommandName)
	return &cli.Command{
		Name:    CommandName,
		Summary: "create, rotate and show the gossip keyring in the state store",
		Usage:   b.String(),
		Run:     run,
	}
}

func run(ctx context.Context, env *cli.Env, args []string) error {
	subs := subcommands()
	if len(args) == 0 {
		return fmt.Errorf("missing subcommand: create, rotate or show: %w", cli.ErrUsage)
	}
	var sub *subcommand
	for i := range subs {
		if subs[i].name == args[0] {
			sub = &subs[i]
		}
	}
	if sub == nil {
		return fmt.Errorf("unknown subcommand %q: want create, rotate or show: %w", args[0], cli.ErrUsage)
	}
	var o options
	fs := flag.NewFlagSet("protokube "+CommandName+" "+sub.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	sub.flags(fs, &o)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			subUsage(env.Stdout, sub)
			return nil
		}
		return fmt.Errorf("%s: %v: %w", sub.name, err, cli.ErrUsage)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected arguments %q: %w", sub.name, fs.Args(), cli.ErrUsage)
	}
	if err := o.validate(sub.name == "rotate"); err != nil {
		return fmt.Errorf("%s: %v: %w", sub.name, err, cli.ErrUsage)
	}
	st, err := o.store.Open(ctx)
	if err != nil {
		return fmt.Errorf("opening state store %s: %w", o.store.URL, err)
	}
	defer st.Close()
	if err := sub.run(ctx, env, &o, ForCluster(st, o.cluster)); err != nil {
		return fmt.Errorf("%s: %w", sub.name, err)
	}
	return nil
}

func subUsage(w io.Writer, s *subcommand) {
	fmt.Fprintf(w, "protokube %s %s - %s\n\nUsage:\n  protokube %s %s %s\n", CommandName, s.name, s.summary, CommandName, s.name, s.usage)
	var o options
	fs := flag.NewFlagSet(s.name, flag.ContinueOnError)
	s.flags(fs, &o)
	var b strings.Builder
	fs.SetOutput(&b)
	fs.PrintDefaults()
	fmt.Fprintf(w, "\nFlags:\n%s", b.String())
}

// pollHint says how long nodes may take to load a change.
func pollHint() string {
	return fmt.Sprintf("nodes poll the keyring every %s", membership.DefaultConfig("").KeyPollInterval)
}

func runCreate(ctx context.Context, env *cli.Env, o *options, kr Keyring) error {
	res, err := kr.Create(ctx, rand.Reader)
	if err != nil {
		return err
	}
	return cli.Print(env.Stdout, o.out, res, func(w io.Writer) error {
		if res.Changed {
			_, err := fmt.Fprintf(w, "created gossip keyring %s with one key, primary %s\n", kr.URL(), res.Keyring.Primary)
			return err
		}
		_, err := fmt.Fprintf(w, "gossip keyring %s already exists (%s, primary %s); left unchanged\n", kr.URL(), plural(res.Keyring.NumKeys, "key"), res.Keyring.Primary)
		return err
	})
}

func runRotate(ctx context.Context, env *cli.Env, o *options, kr Keyring) error {
	step, _ := ParseStep(o.step)
	res, err := kr.Rotate(ctx, step, rand.Reader)
	if err != nil {
		return err
	}
	return cli.Print(env.Stdout, o.out, res, func(w io.Writer) error {
		sum := res.Keyring
		switch {
		case step == StepAdd:
			fmt.Fprintf(w, "added key %s to gossip keyring %s; the primary is still %s (%s)\n", res.Added, kr.URL(), sum.Primary, plural(sum.NumKeys, "key"))
			fmt.Fprintf(w, "next: wait until every node has loaded it (%s), then run --step use\n", pollHint())
		case step == StepUse && res.Changed:
			fmt.Fprintf(w, "gossip keyring %s: the primary is now the newest key %s\n", kr.URL(), sum.Primary)
			fmt.Fprintf(w, "next: wait until every node has loaded it (%s), then run --step remove\n", pollHint())
		case step == StepUse:
			fmt.Fprintf(w, "gossip keyring %s: the newest key %s is already the primary; nothing changed\n", kr.URL(), sum.Primary)
			fmt.Fprintf(w, "next: run --step remove\n")
		default:
			fmt.Fprintf(w, "removed %s (%s) from gossip keyring %s; the only key is now %s\n", plural(len(res.Removed), "key"), strings.Join(res.Removed, ", "), kr.URL(), sum.Primary)
			fmt.Fprintf(w, "nodes that hold only a removed key can no longer join\n")
		}
		if res.Attempts > 1 {
			fmt.Fprintf(w, "(re-read and retried after %s by another writer)\n", plural(res.Attempts-1, "concurrent change"))
		}
		return nil
	})
}

func runShow(ctx context.Context, env *cli.Env, o *options, kr Keyring) error {
	sum, err := kr.Show(ctx)
	if err != nil {
		return err
	}
	return cli.Print(env.Stdout, o.out, sum, func(w io.Writer) error { return PrintSummary(w, sum) })
}

func nextText(s Step) string {
	switch s {
	case StepAdd:
		return "add (start a rotation)"
	case StepUse:
		return "use (make the newest key the primary)"
	case StepRemove:
		return "remove (drop the keys other than the primary)"
	}
	return "unknown: the keys list omits the primary, so the newest key is unknown"
}

// PrintSummary writes the human form of a keyring summary.
func PrintSummary(w io.Writer, s Summary) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "keyring:\t%s\n", s.URL)
	fmt.Fprintf(tw, "version:\t%s\n", s.Version)
	fmt.Fprintf(tw, "keys:\t%d\n", s.NumKeys)
	fmt.Fprintf(tw, "primary:\t%s\n", s.Primary)
	fmt.Fprintf(tw, "next step:\t%s\n", nextText(s.Next))
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FINGERPRINT\tROLE")
	for _, k := range s.Keys {
		var roles []string
		if k.Primary {
			roles = append(roles, "primary")
		} else {
			roles = append(roles, "accepted")
		}
		if k.Newest {
			roles = append(roles, "newest")
		}
		fmt.Fprintf(tw, "%s\t%s\n", k.Fingerprint, strings.Join(roles, ", "))
	}
	return tw.Flush()
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
