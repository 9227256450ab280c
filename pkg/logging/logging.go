// Package logging builds the structured loggers every binary uses: log/slog,
// text for terminals and journald (which adds its own timestamps), JSON when
// asked for.
package logging

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// Options selects the log format and level; they bind to the --log-format
// and --log-level flags.
type Options struct {
	Format string // "text" (default) or "json"
	Level  string // "debug", "info" (default), "warn", "error"
}

// AddFlags binds --log-format and --log-level to o, keeping o's values as
// the defaults (empty means text and info).
func (o *Options) AddFlags(fs *flag.FlagSet) {
	if o.Format == "" {
		o.Format = "text"
	}
	if o.Level == "" {
		o.Level = "info"
	}
	fs.StringVar(&o.Format, "log-format", o.Format, "log format: text or json")
	fs.StringVar(&o.Level, "log-level", o.Level, "log level: debug, info, warn, error")
}

// Validate reports an unknown format or level, naming the flag.
func (o Options) Validate() error {
	if _, err := parseLevel(o.Level); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	switch o.Format {
	case "", "text", "json":
	default:
		return fmt.Errorf("--log-format: %q is not one of text, json", o.Format)
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q is not one of debug, info, warn, error", s)
}

// New returns a logger writing to w. Under journald (JOURNAL_STREAM set) the
// text format omits the time, which the journal records itself.
func New(w io.Writer, o Options) (*slog.Logger, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	level, _ := parseLevel(o.Level)
	hopts := &slog.HandlerOptions{Level: level}
	if o.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, hopts)), nil
	}
	if os.Getenv("JOURNAL_STREAM") != "" {
		hopts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	return slog.New(slog.NewTextHandler(w, hopts)), nil
}

// Discard returns a logger that drops everything, for tests and quiet commands.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
