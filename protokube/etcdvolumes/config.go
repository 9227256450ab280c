// Package etcdvolumes is `protokube etcd-volumes`: on a control-plane node it
// holds one member slot per etcd cluster of the node (package volumes/slots:
// a lease in the state store, the slot of the volume attached here or a free
// one), mounts the slot's volume (volumes.Ensure, which formats only blank
// devices, writing the slot into the volume's identity file, and refuses
// volumes of other slots) and only then starts the member's etcd-manager
// unit, which nodeup installs without an [Install] section and which takes
// the slot from the volume as its identity. The volume provider and its
// settings come from the node configuration, not from flags. It is
// level-triggered: every pass re-checks every member and renews its lease,
// and failures are retried with a per-member backoff.
package etcdvolumes

import (
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"time"

	"github.com/kopsnode/agents/pkg/flagargs"
	"github.com/kopsnode/agents/pkg/logging"
	"github.com/kopsnode/agents/pkg/store/storeurl"
	"github.com/kopsnode/agents/volumes/slots"
)

// DefaultStatusAddr is where the daemon serves /healthz, /metrics and
// /status. (protokube gossip uses 127.0.0.1:3993.)
const DefaultStatusAddr = "127.0.0.1:3990"

// Config configures the command; flags bind to it. The volume provider and
// its settings are not flags: they come from the node configuration
// (spec.volume, etcdClusters[].volume).
type Config struct {
	// ConfigFile is a local copy of the node's NodeConfig
	// (<store>/<cluster>/nodeup/<group>.yaml).
	ConfigFile string
	// Store opens the state store, where the member slot leases are.
	Store storeurl.Settings
	// SlotLease is how long this machine's lease on a slot lasts without
	// renewal; it is renewed on every pass, so it must be longer than
	// Interval and MaxBackoff. A replacement machine adopts a dead
	// machine's slot once its lease lapsed.
	SlotLease time.Duration
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
		SlotLease:     slots.DefaultLease,
		Root:          "/",
		Interval:      30 * time.Second,
		MinBackoff:    2 * time.Second,
		MaxBackoff:    2 * time.Minute,
		DeviceTimeout: 30 * time.Second,
		PollInterval:  500 * time.Millisecond,
		StatusListen:  DefaultStatusAddr,
		Output:        "text",
		Log:           logging.DefaultOptions(),
	}
}

// AddFlags binds the flags to c.
func (c *Config) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.ConfigFile, "config", c.ConfigFile, "the node's NodeConfig file (a local copy of <store>/<cluster>/nodeup/<group>.yaml); required")
	c.Store.AddFlags(fs) // --store (required), --store-endpoint, --store-region, --store-path-style
	fs.DurationVar(&c.SlotLease, "slot-lease", c.SlotLease, "how long this machine's lease on its member slots lasts without renewal (renewed every pass)")
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

// Args renders c as the command's arguments, the inverse of AddFlags:
// "etcd-volumes" and every flag whose value is not the default (nodeup
// renders the unit with it).
func (c Config) Args() []string {
	d := DefaultConfig()
	var b flagargs.Builder
	b.Raw("etcd-volumes")
	b.Always("config", c.ConfigFile)
	b.Raw(c.Store.Args()...)
	b.Duration("slot-lease", c.SlotLease, d.SlotLease)
	b.String("root", c.Root, d.Root)
	b.Duration("interval", c.Interval, d.Interval)
	b.Duration("min-backoff", c.MinBackoff, d.MinBackoff)
	b.Duration("max-backoff", c.MaxBackoff, d.MaxBackoff)
	b.Duration("device-timeout", c.DeviceTimeout, d.DeviceTimeout)
	b.String("status-listen", c.StatusListen, d.StatusListen)
	b.Bool("once", c.Once, d.Once)
	b.String("o", c.Output, d.Output)
	b.Raw(c.Log.Args()...)
	return b.Args()
}

// Validate reports every problem, naming the flag.
func (c Config) Validate() error {
	var errs []error
	if c.ConfigFile == "" {
		errs = append(errs, errors.New("--config: required"))
	}
	if err := c.Store.Validate(); err != nil {
		errs = append(errs, err)
	}
	if !filepath.IsAbs(c.Root) {
		errs = append(errs, fmt.Errorf("--root: %q is not an absolute path", c.Root))
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--interval", c.Interval}, {"--min-backoff", c.MinBackoff}, {"--max-backoff", c.MaxBackoff}, {"--device-timeout", c.DeviceTimeout}, {"poll interval", c.PollInterval}, {"--slot-lease", c.SlotLease}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s: %s is not positive", d.flag, d.v))
		}
	}
	if c.MaxBackoff < c.MinBackoff {
		errs = append(errs, fmt.Errorf("--max-backoff: %s is less than --min-backoff %s", c.MaxBackoff, c.MinBackoff))
	}
	if c.SlotLease > 0 && (c.SlotLease <= c.Interval || c.SlotLease <= c.MaxBackoff) {
		errs = append(errs, fmt.Errorf("--slot-lease: %s must be longer than --interval %s and --max-backoff %s: the lease is renewed on each pass", c.SlotLease, c.Interval, c.MaxBackoff))
	}
	switch c.Output {
	case "", "text", "json":
	default:
		errs = append(errs, fmt.Errorf("-o: %q is not one of text, json", c.Output))
	}
	if err := c.Log.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
