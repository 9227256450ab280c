// Package gossipd is the gossip daemon that protokube runs: membership,
// replicated records, the cluster DNS server, the /etc/hosts block, seed
// registration, and the health, metrics and status endpoints, wired
// together from one Config that binds to command-line flags.
package gossipd

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kopsnode/agents/gossip/localapi"
	"github.com/kopsnode/agents/gossip/membership"
	"github.com/kopsnode/agents/pkg/flagargs"
	"github.com/kopsnode/agents/pkg/logging"
	"github.com/kopsnode/agents/pkg/paths"
	"github.com/kopsnode/agents/pkg/store/storeurl"
	"github.com/kopsnode/agents/protokube/podnet"
)

// DefaultStatusAddr is where the daemon serves /healthz, /metrics, /status
// and the local records API of package gossip/localapi.
const DefaultStatusAddr = localapi.DefaultAddr

// Config is the daemon's configuration; every field has a flag.
type Config struct {
	Cluster string
	// Store is where the keyring and the seed registry live.
	Store    storeurl.Settings
	NodeName string
	// CreateKeyring creates the gossip keyring when none exists
	// (create-if-absent, so concurrent creators yield one); control-plane
	// nodes set it. Without it the daemon waits for the keyring, saying so
	// every KeyringWait.
	CreateKeyring bool
	KeyringWait   time.Duration
	// Bind is the memberlist listen host:port; Advertise the address others dial.
	Bind      string
	Advertise string
	// Seeds is "store", "static" or "aws".
	Seeds       string
	StaticSeeds stringList
	AWSTags     stringList // key=value
	AWSRegion   string
	SeedTTL     time.Duration

	DNSListen  string
	DNSZone    string
	DNSForward bool
	// HostsFile is the hosts file with the managed block; empty disables it.
	HostsFile string
	// Publish are name=addr[,addr] records this node owns; the node's own
	// name in the zone is always published with the advertise address.
	Publish stringList

	StatusAddr string
	LeaveGrace time.Duration
	// Fast selects short timings for tests of several nodes on one machine.
	Fast bool

	// PodNet runs kubenet pod networking over this daemon's records.
	PodNet podnet.Config

	Log logging.Options
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		NodeName:    host,
		Bind:        net.JoinHostPort("0.0.0.0", strconv.Itoa(membership.DefaultPort)),
		Seeds:       "store",
		SeedTTL:     5 * time.Minute,
		DNSListen:   "127.0.0.1:53",
		HostsFile:   paths.HostsFile,
		StatusAddr:  DefaultStatusAddr,
		LeaveGrace:  30 * time.Second,
		KeyringWait: 10 * time.Second,
		PodNet:      podnet.DefaultConfig(),
		Log:         logging.DefaultOptions(),
	}
}

// AddFlags binds the configuration to flags.
func (c *Config) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Cluster, "cluster", c.Cluster, "cluster name (for example example.k8s.local)")
	c.Store.AddFlags(fs)
	fs.BoolVar(&c.CreateKeyring, "create-keyring", c.CreateKeyring, "create the gossip keyring in the store if none exists (control-plane nodes); without it, wait for one")
	fs.DurationVar(&c.KeyringWait, "keyring-wait", c.KeyringWait, "while the keyring is missing, how often to look again and say so")
	fs.StringVar(&c.NodeName, "node-name", c.NodeName, "this node's unique name in gossip")
	fs.StringVar(&c.Bind, "bind", c.Bind, "gossip listen address host:port")
	fs.StringVar(&c.Advertise, "advertise", c.Advertise, "gossip address other members dial (default: the bind address, or the first private address when binding to 0.0.0.0)")
	fs.StringVar(&c.Seeds, "seeds", c.Seeds, "seed provider: store, static or aws")
	fs.Var(&c.StaticSeeds, "static-seed", "host:port of a seed for -seeds=static (repeatable)")
	fs.Var(&c.AWSTags, "aws-tag", "key=value tag of seed instances for -seeds=aws (repeatable)")
	fs.StringVar(&c.AWSRegion, "aws-region", c.AWSRegion, "AWS region for -seeds=aws")
	fs.DurationVar(&c.SeedTTL, "seed-ttl", c.SeedTTL, "lease of this node's registration for -seeds=store")
	fs.StringVar(&c.DNSListen, "dns-listen", c.DNSListen, "cluster DNS listen address host:port (UDP and TCP); empty disables")
	fs.StringVar(&c.DNSZone, "dns-zone", c.DNSZone, "internal zone (default internal.<cluster>)")
	fs.BoolVar(&c.DNSForward, "dns-forward", c.DNSForward, "forward names outside the zone to the resolvers of /etc/resolv.conf")
	fs.StringVar(&c.HostsFile, "hosts-file", c.HostsFile, "hosts file to keep a managed block in; empty disables")
	fs.Var(&c.Publish, "publish", "name=addr[,addr] record this node publishes (repeatable); the address \"self\" is this node's advertise address")
	fs.StringVar(&c.StatusAddr, "status-listen", c.StatusAddr, "listen address of /healthz, /metrics and /status")
	fs.DurationVar(&c.LeaveGrace, "leave-grace", c.LeaveGrace, "how long a departed node's records are kept")
	fs.BoolVar(&c.Fast, "test-timings", c.Fast, "short gossip timings for tests of several nodes on one machine")
	c.PodNet.AddFlags(fs)
	c.Log.AddFlags(fs)
}

// Args renders the configuration as flags, the exact inverse of AddFlags
// from DefaultConfig: nodeup builds a Config from the node configuration
// and writes Args into protokube.service. Defaults are left out; the node
// name's default is the host name of the machine nodeup runs on, which is
// the machine the unit runs on.
func (c Config) Args() []string {
	d := DefaultConfig()
	var b flagargs.Builder
	b.Always("cluster", c.Cluster)
	b.Raw(c.Store.Args()...)
	b.Bool("create-keyring", c.CreateKeyring, d.CreateKeyring)
	b.Duration("keyring-wait", c.KeyringWait, d.KeyringWait)
	b.String("node-name", c.NodeName, d.NodeName)
	b.String("bind", c.Bind, d.Bind)
	b.String("advertise", c.Advertise, d.Advertise)
	b.String("seeds", c.Seeds, d.Seeds)
	b.List("static-seed", c.StaticSeeds)
	b.List("aws-tag", c.AWSTags)
	b.String("aws-region", c.AWSRegion, d.AWSRegion)
	b.Duration("seed-ttl", c.SeedTTL, d.SeedTTL)
	b.String("dns-listen", c.DNSListen, d.DNSListen)
	b.String("dns-zone", c.DNSZone, d.DNSZone)
	b.Bool("dns-forward", c.DNSForward, d.DNSForward)
	b.String("hosts-file", c.HostsFile, d.HostsFile)
	b.List("publish", c.Publish)
	b.String("status-listen", c.StatusAddr, d.StatusAddr)
	b.Duration("leave-grace", c.LeaveGrace, d.LeaveGrace)
	b.Bool("test-timings", c.Fast, d.Fast)
	b.Raw(c.PodNet.Args()...)
	b.Raw(c.Log.Args()...)
	return b.Args()
}

// Zone returns the DNS zone, defaulted from the cluster name.
func (c Config) Zone() string {
	if c.DNSZone != "" {
		return strings.TrimSuffix(c.DNSZone, ".") + "."
	}
	return "internal." + strings.TrimSuffix(c.Cluster, ".") + "."
}

// Validate returns every problem, naming the flag.
func (c Config) Validate() error {
	var errs []error
	if c.Cluster == "" || strings.Contains(c.Cluster, "/") {
		errs = append(errs, fmt.Errorf("--cluster: %q must be a name without slashes", c.Cluster))
	}
	if c.Store.URL == "" {
		errs = append(errs, errors.New("--store: required (the gossip keys are read from it)"))
	} else if err := c.Store.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.KeyringWait <= 0 {
		errs = append(errs, fmt.Errorf("--keyring-wait: must be positive, got %s", c.KeyringWait))
	}
	if c.NodeName == "" || strings.Contains(c.NodeName, "/") {
		errs = append(errs, fmt.Errorf("--node-name: %q must be a name without slashes", c.NodeName))
	}
	if _, err := parseHostPort(c.Bind); err != nil {
		errs = append(errs, fmt.Errorf("--bind: %w", err))
	}
	if c.Advertise != "" {
		if _, err := netip.ParseAddr(c.Advertise); err != nil {
			if _, err := parseHostPort(c.Advertise); err != nil {
				errs = append(errs, fmt.Errorf("--advertise: %q is neither an address nor host:port", c.Advertise))
			}
		}
	}
	switch c.Seeds {
	case "store":
		if c.SeedTTL <= 0 {
			errs = append(errs, fmt.Errorf("--seed-ttl: must be positive, got %s", c.SeedTTL))
		}
	case "static":
		if len(c.StaticSeeds) == 0 {
			errs = append(errs, errors.New("--static-seed: at least one with -seeds=static"))
		}
		for i, s := range c.StaticSeeds {
			if err := validateSeed(s); err != nil {
				errs = append(errs, fmt.Errorf("--static-seed[%d]: %w", i, err))
			}
		}
	case "aws":
		if len(c.AWSTags) == 0 {
			errs = append(errs, errors.New("--aws-tag: at least one with -seeds=aws"))
		}
		for i, s := range c.AWSTags {
			if k, _, ok := strings.Cut(s, "="); !ok || k == "" {
				errs = append(errs, fmt.Errorf("--aws-tag[%d]: %q is not key=value", i, s))
			}
		}
	default:
		errs = append(errs, fmt.Errorf("--seeds: %q is not one of store, static, aws", c.Seeds))
	}
	if c.DNSListen != "" {
		if _, err := parseHostPort(c.DNSListen); err != nil {
			errs = append(errs, fmt.Errorf("--dns-listen: %w", err))
		}
	}
	for i, p := range c.Publish {
		if _, _, err := parsePublish(p); err != nil {
			errs = append(errs, fmt.Errorf("--publish[%d]: %w", i, err))
		}
	}
	if _, err := parseHostPort(c.StatusAddr); err != nil {
		errs = append(errs, fmt.Errorf("--status-listen: %w", err))
	}
	if c.LeaveGrace <= 0 {
		errs = append(errs, fmt.Errorf("--leave-grace: must be positive, got %s", c.LeaveGrace))
	}
	if err := c.PodNet.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Log.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func parseHostPort(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not ip:port", s)
	}
	return ap, nil
}

// validateSeed checks a static seed: host:port, the host an address or a
// name (memberlist resolves names when it joins), as the configuration's
// gossip.staticSeeds allows.
func validateSeed(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return fmt.Errorf("%q is not host:port", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: %q is not a port number (1 to 65535)", s, port)
	}
	return nil
}

// SelfAddr in a --publish list stands for this node's advertise address, so
// units can publish names (such as the API server's) without per-node values.
const SelfAddr = "self"

func parsePublish(s string) (string, []netip.Addr, error) {
	name, list, ok := strings.Cut(s, "=")
	if !ok || name == "" || list == "" {
		return "", nil, fmt.Errorf("%q is not name=addr[,addr]", s)
	}
	var addrs []netip.Addr
	for _, a := range strings.Split(list, ",") {
		a = strings.TrimSpace(a)
		if a == SelfAddr {
			// Resolved to the advertise address when published.
			addrs = append(addrs, netip.Addr{})
			continue
		}
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return "", nil, fmt.Errorf("%q: %w", s, err)
		}
		addrs = append(addrs, ip)
	}
	return name, addrs, nil
}
