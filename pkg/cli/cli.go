// Package cli is the small subcommand runner shared by every binary: each
// binary is a set of named commands with their own flag sets, plus the
// built-in `version` and `help`.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/kopsnode/agents/pkg/version"
)

// Command is one subcommand.
type Command struct {
	Name    string
	Summary string
	// Usage is the argument synopsis shown after the command name.
	Usage string
	// Flags binds the command's flags; called once before parsing.
	Flags func(fs *flag.FlagSet)
	// Run runs the command with the arguments left after the flags.
	Run func(ctx context.Context, env *Env, args []string) error
}

// Env carries the standard streams, so commands are testable.
type Env struct {
	Stdout io.Writer
	Stderr io.Writer
	Stdin  io.Reader
}

// ErrUsage marks an error in how the command was called; it exits with 2.
var ErrUsage = errors.New("usage error")

// App is a binary: its name, a one-line description and its commands.
type App struct {
	Name     string
	Summary  string
	Commands []*Command
}

// Main runs the app with os.Args and returns the process exit code. It
// cancels the context on SIGINT/SIGTERM.
func (a *App) Main() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return a.Run(ctx, &Env{Stdout: os.Stdout, Stderr: os.Stderr, Stdin: os.Stdin}, os.Args[1:])
}

// Run runs the app with the given arguments and returns the exit code.
func (a *App) Run(ctx context.Context, env *Env, args []string) int {
	cmds := append([]*Command{a.versionCommand()}, a.Commands...)
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		if len(args) > 1 {
			for _, c := range cmds {
				if c.Name == args[1] {
					a.commandUsage(env.Stdout, c)
					return 0
				}
			}
		}
		a.usage(env.Stdout, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "--version" || args[0] == "-version" {
		args = []string{"version"}
	}
	var cmd *Command
	for _, c := range cmds {
		if c.Name == args[0] {
			cmd = c
		}
	}
	if cmd == nil {
		fmt.Fprintf(env.Stderr, "%s: unknown command %q\n\n", a.Name, args[0])
		a.usage(env.Stderr, cmds)
		return 2
	}
	fs := flag.NewFlagSet(a.Name+" "+cmd.Name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if cmd.Flags != nil {
		cmd.Flags(fs)
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			a.commandUsage(env.Stdout, cmd)
			return 0
		}
		fmt.Fprintf(env.Stderr, "%s %s: %v\n", a.Name, cmd.Name, err)
		a.commandUsage(env.Stderr, cmd)
		return 2
	}
	if err := cmd.Run(ctx, env, fs.Args()); err != nil {
		fmt.Fprintf(env.Stderr, "%s %s: %v\n", a.Name, cmd.Name, err)
		if errors.Is(err, ErrUsage) {
			return 2
		}
		return 1
	}
	return 0
}

func (a *App) usage(w io.Writer, cmds []*Command) {
	fmt.Fprintf(w, "%s - %s\n\nUsage:\n  %s <command> [flags] [args]\n\nCommands:\n", a.Name, a.Summary, a.Name)
	sorted := append([]*Command(nil), cmds...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	for _, c := range sorted {
		fmt.Fprintf(w, "  %-18s %s\n", c.Name, c.Summary)
	}
	fmt.Fprintf(w, "\nRun '%s help <command>' or '%s <command> --help' for a command's flags.\n", a.Name, a.Name)
}

func (a *App) commandUsage(w io.Writer, c *Command) {
	fmt.Fprintf(w, "%s %s - %s\n\nUsage:\n  %s %s [flags] %s\n", a.Name, c.Name, c.Summary, a.Name, c.Name, c.Usage)
	fs := flag.NewFlagSet(c.Name, flag.ContinueOnError)
	if c.Flags != nil {
		c.Flags(fs)
	}
	var b strings.Builder
	fs.SetOutput(&b)
	fs.PrintDefaults()
	if b.Len() > 0 {
		fmt.Fprintf(w, "\nFlags:\n%s", b.String())
	}
}

func (a *App) versionCommand() *Command {
	var out string
	return &Command{
		Name:    "version",
		Summary: "print the version",
		Flags:   func(fs *flag.FlagSet) { fs.StringVar(&out, "o", "text", "output format: text or json") },
		Run: func(ctx context.Context, env *Env, args []string) error {
			v := version.Get(a.Name)
			return Print(env.Stdout, out, v, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "%s %s (commit %s, %s, %s)\n", v.Binary, v.Version, v.GitCommit, v.GoVersion, v.Platform)
				return err
			})
		},
	}
}

// Print writes v as indented JSON when format is "json", or calls human
// otherwise. It is how every status command honours -o.
func Print(w io.Writer, format string, v any, human func(io.Writer) error) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "", "text", "human":
		return human(w)
	}
	return fmt.Errorf("-o: %q is not one of text, json: %w", format, ErrUsage)
}
