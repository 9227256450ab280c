package manifests

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/kopsnode/agents/pkg/bootstraptoken"
	"github.com/kopsnode/agents/pkg/flagargs"
	"github.com/kopsnode/agents/pkg/logging"
	"github.com/kopsnode/agents/pkg/paths"
	"github.com/kopsnode/agents/pkg/store/storeurl"
)

// DefaultStatusAddr is where the daemon serves /healthz, /metrics and
// /status. (etcd-volumes uses 127.0.0.1:3990, gossip 127.0.0.1:3993.)
const DefaultStatusAddr = "127.0.0.1:3997"

// DefaultKubeconfig is the admin kubeconfig nodeup writes on control-plane
// nodes (system:masters), with which the manifests are applied.
const DefaultKubeconfig = paths.AdminKubeconfig

// FieldManager is the server-side apply field manager of every object this
// package applies.
const FieldManager = "kopsnode-protokube"

// Config configures the command; flags bind to it.
type Config struct {
	// ConfigFile is nodeup's local copy of the node configuration (the
	// fields the manifests read).
	ConfigFile string
	// Store is the state store, from which the bootstrap token is read.
	Store storeurl.Settings
	// Kubeconfig reaches the API server with rights to apply the objects.
	Kubeconfig string
	// Interval is how often every object is applied again.
	Interval time.Duration
	// WaitInterval is how often the API server is tried while it does not
	// answer, and how soon a failed pass is retried.
	WaitInterval time.Duration
	// StatusListen serves /healthz, /metrics and /status; empty: none.
	StatusListen string
	// BootstrapTokenTTL is the life of the node bootstrap tokens this
	// command creates; it replaces the current token when less than
	// bootstraptoken.DefaultRotateFraction of its life is left.
	BootstrapTokenTTL time.Duration
	Log               logging.Options
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Kubeconfig:   DefaultKubeconfig,
		Interval:     time.Minute,
		WaitInterval: 2 * time.Second,
		StatusListen: DefaultStatusAddr,

		BootstrapTokenTTL: bootstraptoken.DefaultTTL,
		Log:               logging.DefaultOptions(),
	}
}

// TokenPolicy is the bootstrap token policy the flags select.
func (c Config) TokenPolicy() bootstraptoken.Policy {
	p := bootstraptoken.DefaultPolicy()
	p.TTL = c.BootstrapTokenTTL
	return p
}

// AddFlags binds the flags to c.
func (c *Config) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.ConfigFile, "config", c.ConfigFile, "the node configuration copy nodeup writes (cluster name, networking, kubelet clusterDNS/clusterDomain); required")
	c.Store.AddFlags(fs)
	fs.StringVar(&c.Kubeconfig, "kubeconfig", c.Kubeconfig, "kubeconfig with rights to apply the system manifests")
	fs.DurationVar(&c.Interval, "interval", c.Interval, "how often every object is applied again (restoring objects changed by hand)")
	fs.DurationVar(&c.WaitInterval, "wait-interval", c.WaitInterval, "how often the API server is tried while it does not answer, and a failed pass retried")
	fs.StringVar(&c.StatusListen, "status-listen", c.StatusListen, "address serving /healthz, /metrics and /status (empty: none)")
	fs.DurationVar(&c.BootstrapTokenTTL, "bootstrap-token-ttl", c.BootstrapTokenTTL, "life of a new node bootstrap token; the current token is replaced when less than a third of its life is left, and the old one stays valid until it expires")
	c.Log.AddFlags(fs)
}

// Args returns the flags that reproduce c, the exact inverse of AddFlags
// from DefaultConfig (defaults left out): how nodeup renders the unit.
func (c Config) Args() []string {
	d := DefaultConfig()
	var b flagargs.Builder
	b.Always("config", c.ConfigFile)
	b.Raw(c.Store.Args()...)
	b.String("kubeconfig", c.Kubeconfig, d.Kubeconfig)
	b.Duration("interval", c.Interval, d.Interval)
	b.Duration("wait-interval", c.WaitInterval, d.WaitInterval)
	b.String("status-listen", c.StatusListen, d.StatusListen)
	b.Duration("bootstrap-token-ttl", c.BootstrapTokenTTL, d.BootstrapTokenTTL)
	b.Raw(c.Log.Args()...)
	return b.Args()
}

// Validate reports every problem, naming the flag.
func (c Config) Validate() error {
	var errs []error
	if c.ConfigFile == "" {
		errs = append(errs, errors.New("--config: required"))
	}
	if c.Store.URL == "" {
		errs = append(errs, errors.New("--store: required"))
	} else if err := c.Store.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Kubeconfig == "" {
		errs = append(errs, errors.New("--kubeconfig: required"))
	}
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("--interval: %s is not positive", c.Interval))
	}
	if c.WaitInterval <= 0 {
		errs = append(errs, fmt.Errorf("--wait-interval: %s is not positive", c.WaitInterval))
	}
	if c.BootstrapTokenTTL < bootstraptoken.MinTTL {
		errs = append(errs, fmt.Errorf("--bootstrap-token-ttl: %s is shorter than the minimum %s", c.BootstrapTokenTTL, bootstraptoken.MinTTL))
	}
	if err := c.Log.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
