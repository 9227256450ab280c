// Package etcdvolumes is `protokube etcd-volumes`: on a control-plane node it
// mounts the volume of each etcd member the node runs (volumes.Ensure, which
// formats only blank devices and refuses volumes of other members) and only
// then starts the member's etcd-manager unit, which nodeup installs without
// an [Install] section. It is level-triggered: every pass re-checks every
// member, and failures are retried with a per-member backoff.
package etcdvolumes

import (
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/kopsnode/agents/pkg/logging"
	"github.com/kopsnode/agents/volumes/local"
)

// DefaultStatusAddr is where the daemon serves /healthz, /metrics and
// /status. (protokube gossip uses 127.0.0.1:3993.)
const DefaultStatusAddr = "127.0.0.1:3990"

// Config configures the command; flags bind to it.
type Config struct {
	// ConfigFile is a local copy of the node's NodeConfig
	// (<store>/<cluster>/nodeup/<group>.yaml).
	ConfigFile string
	// MemberID is this node's etcd member name, part of every volume's
	// identity. Empty: the host name.
	MemberID string
	// Devices maps an etcd cluster name to the device that holds, or will
	// hold, its member's volume (the local provider's Devices).
	Devices map[string]string
	// Scan lists glob patterns searched for an existing volume by label
	// (the local provider's Scan); empty: every block device.
	Scan []string
	// Root prefixes every mount target (default "/"): tests mount under a
	// temporary directory.
	Root string
	// Interval is how often a ready node is checked again.
	Interval time.Duration
	// MinBackoff and MaxBackoff bound the retry delay of a failing member;
	// it doubles after each consecutive failure.
	MinBackoff, MaxBackoff time.Duration
	// DeviceTimeout bounds one attempt's wait for a device to appear; the
	// loop retries after it.
	DeviceTimeout time.Duration
	// PollInterval is how often a missing device is looked for.
	PollInterval time.Duration
	// StatusListen serves /healthz, /metrics and /status; empty: none.
	StatusListen string
	// Once runs one pass, prints the status and exits (non-zero unless
	// every member is ready).
	Once bool
	// Output is the --once status format: text or json.
	Output string
	Log    logging.Options
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Devices:       map[string]string{},
		Root:          "/",
		Interval:      30 * time.Second,
		MinBackoff:    2 * time.Second,
		MaxBackoff:    2 * time.Minute,
		DeviceTimeout: 30 * time.Second,
		PollInterval:  500 * time.Millisecond,
		StatusListen:  DefaultStatusAddr,
		Output:        "text",
	}
}

// deviceFlag is a repeatable NAME=PATH flag.
type deviceFlag map[string]string

func (d deviceFlag) String() string {
	keys := make([]string, 0, len(d))
	for k := range d {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + d[k]
	}
	return strings.Join(parts, ",")
}

func (d deviceFlag) Set(s string) error {
	name, path, ok := strings.Cut(s, "=")
	if !ok || name == "" || path == "" {
		return fmt.Errorf("%q is not ETCD_CLUSTER=DEVICE (for example main=/dev/disk/by-id/nvme-...)", s)
	}
	d[name] = path
	return nil
}

type listFlag struct{ l *[]string }

func (f listFlag) String() string {
	if f.l == nil {
		return ""
	}
	return strings.Join(*f.l, ",")
}
func (f listFlag) Set(s string) error { *f.l = append(*f.l, s); return nil }

// AddFlags binds the flags to c.
func (c *Config) AddFlags(fs *flag.FlagSet) {
	if c.Devices == nil {
		c.Devices = map[string]string{}
	}
	fs.StringVar(&c.ConfigFile, "config", c.ConfigFile, "the node's NodeConfig file (a local copy of <store>/<cluster>/nodeup/<group>.yaml); required")
	fs.StringVar(&c.MemberID, "member-id", c.MemberID, "this node's etcd member name, recorded in each volume's identity (default: the host name)")
	fs.Var(deviceFlag(c.Devices), "device", "ETCD_CLUSTER=DEVICE: the device holding or to hold that etcd cluster's volume, formatted only if blank (repeatable)")
	fs.Var(listFlag{&c.Scan}, "scan", "glob of devices searched for an existing volume by its label (repeatable; default every block device)")
	fs.StringVar(&c.Root, "root", c.Root, "prefix of the mount targets /mnt/etcd/<name> (for tests)")
	fs.DurationVar(&c.Interval, "interval", c.Interval, "how often ready members are checked again")
	fs.DurationVar(&c.MinBackoff, "min-backoff", c.MinBackoff, "first retry delay of a failing member")
	fs.DurationVar(&c.MaxBackoff, "max-backoff", c.MaxBackoff, "largest retry delay of a failing member")
	fs.DurationVar(&c.DeviceTimeout, "device-timeout", c.DeviceTimeout, "how long one attempt waits for a device to appear")
	fs.StringVar(&c.StatusListen, "status-listen", c.StatusListen, "address serving /healthz, /metrics and /status (empty: none; not used with --once)")
	fs.BoolVar(&c.Once, "once", c.Once, "run one pass, print the status and exit (exit code 1 unless every member is ready)")
	fs.StringVar(&c.Output, "o", c.Output, "--once output format: text or json")
	c.Log.AddFlags(fs)
}

// Validate reports every problem, naming the flag.
func (c Config) Validate() error {
	var errs []error
	if c.ConfigFile == "" {
		errs = append(errs, errors.New("--config: required"))
	}
	if !filepath.IsAbs(c.Root) {
		errs = append(errs, fmt.Errorf("--root: %q is not an absolute path", c.Root))
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--interval", c.Interval}, {"--min-backoff", c.MinBackoff}, {"--max-backoff", c.MaxBackoff}, {"--device-timeout", c.DeviceTimeout}, {"poll interval", c.PollInterval}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s: %s is not positive", d.flag, d.v))
		}
	}
	if c.MaxBackoff < c.MinBackoff {
		errs = append(errs, fmt.Errorf("--max-backoff: %s is less than --min-backoff %s", c.MaxBackoff, c.MinBackoff))
	}
	switch c.Output {
	case "", "text", "json":
	default:
		errs = append(errs, fmt.Errorf("-o: %q is not one of text, json", c.Output))
	}
	if err := (local.Config{Devices: c.Devices, Scan: c.Scan}).Validate(); err != nil {
		errs = append(errs, fmt.Errorf("--device/--scan: %w", err))
	}
	if err := c.Log.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
