// Package runconfig is the run configuration of `etcd-manager run`: a
// typed struct that binds to the command's flags (AddFlags), renders back
// into them (Args, the exact inverse) and says what is wrong with a value
// (Validate). The command parses it; nodeup builds it from the node
// configuration and writes Args into the etcd-manager unit, so the two
// cannot disagree on a flag.
package runconfig

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/discovery"
	"github.com/kopsnode/agents/etcd-manager/manager"
	"github.com/kopsnode/agents/gossip/localapi"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/flagargs"
	"github.com/kopsnode/agents/pkg/logging"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/storeurl"
)

// Discovery backends of --discovery.
const (
	DiscoveryStore  = "store"
	DiscoveryStatic = "static"
	DiscoveryGossip = "gossip"
	// DiscoveryAWSVolumes finds peers through the etcd cluster's EBS
	// volumes attached to running instances (with AWS).
	DiscoveryAWSVolumes = "aws-volumes"
)

// Config is every flag of `etcd-manager run`.
type Config struct {
	ClusterName string
	EtcdCluster string
	// ID is the member identity; empty: the slot of the volume at DataDir.
	ID         string
	DataDir    string
	BinDirRoot string
	// Address is this node's IP; empty: the default route's source address.
	Address string
	// Ports; 0: the etcd cluster's defaults.
	PeerPort, ClientPort, ManagerPort int
	DNSSuffix                         string
	AdvertiseNames                    bool
	HostsFile                         string
	APIServerClientCertDir            string
	LocalClientAddress                string
	// SeedMembers and SeedEtcdVersion, both or neither, are the spec
	// written to the control area when it has none.
	SeedMembers     int
	SeedEtcdVersion string
	ExtraSANs       []string
	Store           storeurl.Settings
	// Discovery lists the peer discovery backends, the first naming an ID
	// winning: store, static (with Peers), gossip (through GossipAddr).
	Discovery []string
	// Peers are the static peers, id=host:port,...
	Peers string
	// GossipAddr is the local gossip daemon's API (protokube gossip's
	// --status-listen), for the gossip backend.
	GossipAddr string
	// AWS is how the aws-volumes backend reaches EC2 and the instance
	// metadata service: the node configuration's volume.aws.
	AWS config.AWSVolumeSpec

	Tick, LeaseDuration, PeerTimeout, DeadMemberThreshold time.Duration

	BackupInterval, VerifyInterval, DeltaInterval time.Duration
	// BackupStore is the store URL of the backups; empty: the state store.
	BackupStore                             string
	RetentionHourlyDays, RetentionDailyDays int

	EtcdLogLevel string
	// MetricsAddr serves /healthz, /metrics, /status; empty: by etcd cluster.
	MetricsAddr string
	Log         logging.Options
}

// DefaultConfig returns the command's defaults: the manager's
// (manager.DefaultConfig), discovery through the store registry.
func DefaultConfig() Config {
	d := manager.DefaultConfig("", "main")
	return Config{
		EtcdCluster:         "main",
		BinDirRoot:          d.BinDirRoot,
		LocalClientAddress:  d.LocalClientAddress,
		Discovery:           []string{DiscoveryStore},
		GossipAddr:          localapi.DefaultAddr,
		Tick:                d.Tick,
		LeaseDuration:       d.LeaseDuration,
		PeerTimeout:         d.PeerTimeout,
		DeadMemberThreshold: d.DeadMemberThreshold,
		BackupInterval:      d.Backups.Interval,
		VerifyInterval:      d.Backups.VerifyInterval,
		DeltaInterval:       d.Backups.DeltaInterval,
		RetentionHourlyDays: d.Backups.Retention.HourlyDays,
		RetentionDailyDays:  d.Backups.Retention.DailyDays,
		EtcdLogLevel:        d.EtcdLogLevel,
		Log:                 logging.DefaultOptions(),
	}
}

// commaList is a comma-separated flag value; empty parses to nil.
type commaList struct{ l *[]string }

func (f commaList) String() string {
	if f.l == nil {
		return ""
	}
	return strings.Join(*f.l, ",")
}

func (f commaList) Set(s string) error {
	*f.l = nil
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*f.l = append(*f.l, v)
		}
	}
	return nil
}

// AddFlags binds the flags to c, with c's values as the defaults.
func (c *Config) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.ClusterName, "cluster-name", c.ClusterName, "Kubernetes cluster name (top-level folder in the store); required")
	fs.StringVar(&c.EtcdCluster, "etcd-cluster", c.EtcdCluster, "etcd cluster name: main or events (sets port defaults)")
	fs.StringVar(&c.ID, "id", c.ID, "instance identity and etcd member name (default: the member slot in the volume identity file at the root of --data-dir, which protokube etcd-volumes writes)")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "data directory (state.json, etcd/, pki/); required")
	fs.StringVar(&c.BinDirRoot, "etcd-bin-dir-root", c.BinDirRoot, "directory with one v<version>/etcd per installed etcd version")
	fs.StringVar(&c.Address, "address", c.Address, "this node's IP address, listened on and advertised (default: the source address of the default route)")
	fs.IntVar(&c.PeerPort, "peer-port", c.PeerPort, "etcd peer port (default 2380 main, 2381 events)")
	fs.IntVar(&c.ClientPort, "client-port", c.ClientPort, "etcd client port (default 4001 main, 4002 events)")
	fs.IntVar(&c.ManagerPort, "manager-port", c.ManagerPort, "etcd-manager peer protocol port (default 3994 main, 3995 events)")
	fs.StringVar(&c.DNSSuffix, "dns-suffix", c.DNSSuffix, "members are named etcd-<id>.<suffix> (default internal.<cluster-name>)")
	fs.BoolVar(&c.AdvertiseNames, "advertise-names", c.AdvertiseNames, "advertise etcd URLs by member name instead of address (needs DNS or --hosts-file)")
	fs.StringVar(&c.HostsFile, "hosts-file", c.HostsFile, "keep the members' names in a managed block of this hosts file (for example /etc/hosts)")
	fs.StringVar(&c.APIServerClientCertDir, "apiserver-client-cert-dir", c.APIServerClientCertDir, "keep kube-apiserver's etcd client certificate in this directory: etcd-client.crt, etcd-client.key, etcd-ca.crt (default: none)")
	fs.StringVar(&c.LocalClientAddress, "local-client-address", c.LocalClientAddress, "etcd also serves clients on this address at the client port, for the local kube-apiserver (empty: only --address)")
	fs.IntVar(&c.SeedMembers, "seed-members", c.SeedMembers, "member count written as the cluster spec when the store has none (with --seed-etcd-version; never overwrites a spec)")
	fs.StringVar(&c.SeedEtcdVersion, "seed-etcd-version", c.SeedEtcdVersion, "etcd version written as the cluster spec when the store has none (with --seed-members)")
	fs.Var(commaList{&c.ExtraSANs}, "extra-sans", "comma-separated extra IP addresses or names for this instance's certificates")
	c.Store.AddFlags(fs) // --store (required), --store-endpoint, --store-region, --store-path-style
	fs.Var(commaList{&c.Discovery}, "discovery", "peer discovery, comma-separated, the first naming an instance winning: store (registry in the state store), static (--peers), gossip (records through the local protokube gossip, --gossip-addr), aws-volumes (the etcd cluster's EBS volumes attached to running instances, --aws-*)")
	fs.StringVar(&c.Peers, "peers", c.Peers, "static peers as id=host:port,... (with --discovery static)")
	fs.StringVar(&c.GossipAddr, "gossip-addr", c.GossipAddr, "the local gossip daemon's API, its --status-listen (with --discovery gossip)")
	fs.StringVar(&c.AWS.Region, "aws-region", c.AWS.Region, "EC2 region of --discovery aws-volumes (default: the instance's, from the instance metadata service)")
	fs.StringVar(&c.AWS.EC2Endpoint, "aws-ec2-endpoint", c.AWS.EC2Endpoint, "EC2 API URL of --discovery aws-volumes (default: AWS's for the region)")
	fs.StringVar(&c.AWS.IMDSEndpoint, "aws-imds-endpoint", c.AWS.IMDSEndpoint, "instance metadata service URL of --discovery aws-volumes (default: AWS's)")
	fs.DurationVar(&c.Tick, "tick", c.Tick, "reconcile interval")
	fs.DurationVar(&c.LeaseDuration, "lease-duration", c.LeaseDuration, "leader lease duration")
	fs.DurationVar(&c.PeerTimeout, "peer-timeout", c.PeerTimeout, "timeout of one peer call")
	fs.DurationVar(&c.DeadMemberThreshold, "dead-member-threshold", c.DeadMemberThreshold, "how long a member must be down before a waiting peer replaces it")
	fs.DurationVar(&c.BackupInterval, "backup-interval", c.BackupInterval, "interval of the leader's scheduled full backups (0: none; backups before membership changes and backup-now still run)")
	fs.DurationVar(&c.VerifyInterval, "verify-interval", c.VerifyInterval, "interval of the leader's verification of the newest backup by a test restore into a throwaway etcd (0: only after restores)")
	fs.StringVar(&c.BackupStore, "backup-store", c.BackupStore, "store URL the backups go to, with the --store settings (default: the state store)")
	fs.DurationVar(&c.DeltaInterval, "delta-interval", c.DeltaInterval, "the most a change waits before the leader writes it in a delta segment of the backup store (point-in-time recovery; 0: no deltas)")
	fs.IntVar(&c.RetentionHourlyDays, "backup-retention-hourly-days", c.RetentionHourlyDays, "keep one full backup per hour for this many days (everything from the last hour is always kept)")
	fs.IntVar(&c.RetentionDailyDays, "backup-retention-daily-days", c.RetentionDailyDays, "keep one full backup per day for this many days")
	fs.StringVar(&c.EtcdLogLevel, "etcd-log-level", c.EtcdLogLevel, "etcd's --log-level")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", c.MetricsAddr, "listen address of /healthz, /metrics and /status (default 127.0.0.1:3991 main, 127.0.0.1:3992 events)")
	c.Log.AddFlags(fs)
}

// Args renders c as flags, the exact inverse of AddFlags from
// DefaultConfig; defaults are left out.
func (c Config) Args() []string {
	d := DefaultConfig()
	var b flagargs.Builder
	b.Always("cluster-name", c.ClusterName)
	b.String("etcd-cluster", c.EtcdCluster, d.EtcdCluster)
	b.String("id", c.ID, d.ID)
	b.String("data-dir", c.DataDir, d.DataDir)
	b.String("etcd-bin-dir-root", c.BinDirRoot, d.BinDirRoot)
	b.String("address", c.Address, d.Address)
	b.Int("peer-port", c.PeerPort, d.PeerPort)
	b.Int("client-port", c.ClientPort, d.ClientPort)
	b.Int("manager-port", c.ManagerPort, d.ManagerPort)
	b.String("dns-suffix", c.DNSSuffix, d.DNSSuffix)
	b.Bool("advertise-names", c.AdvertiseNames, d.AdvertiseNames)
	b.String("hosts-file", c.HostsFile, d.HostsFile)
	b.String("apiserver-client-cert-dir", c.APIServerClientCertDir, d.APIServerClientCertDir)
	b.String("local-client-address", c.LocalClientAddress, d.LocalClientAddress)
	b.Int("seed-members", c.SeedMembers, d.SeedMembers)
	b.String("seed-etcd-version", c.SeedEtcdVersion, d.SeedEtcdVersion)
	b.String("extra-sans", strings.Join(c.ExtraSANs, ","), strings.Join(d.ExtraSANs, ","))
	b.Raw(c.Store.Args()...)
	b.String("discovery", strings.Join(c.Discovery, ","), strings.Join(d.Discovery, ","))
	b.String("peers", c.Peers, d.Peers)
	b.String("gossip-addr", c.GossipAddr, d.GossipAddr)
	b.String("aws-region", c.AWS.Region, d.AWS.Region)
	b.String("aws-ec2-endpoint", c.AWS.EC2Endpoint, d.AWS.EC2Endpoint)
	b.String("aws-imds-endpoint", c.AWS.IMDSEndpoint, d.AWS.IMDSEndpoint)
	b.Duration("tick", c.Tick, d.Tick)
	b.Duration("lease-duration", c.LeaseDuration, d.LeaseDuration)
	b.Duration("peer-timeout", c.PeerTimeout, d.PeerTimeout)
	b.Duration("dead-member-threshold", c.DeadMemberThreshold, d.DeadMemberThreshold)
	b.Duration("backup-interval", c.BackupInterval, d.BackupInterval)
	b.Duration("verify-interval", c.VerifyInterval, d.VerifyInterval)
	b.String("backup-store", c.BackupStore, d.BackupStore)
	b.Duration("delta-interval", c.DeltaInterval, d.DeltaInterval)
	b.Int("backup-retention-hourly-days", c.RetentionHourlyDays, d.RetentionHourlyDays)
	b.Int("backup-retention-daily-days", c.RetentionDailyDays, d.RetentionDailyDays)
	b.String("etcd-log-level", c.EtcdLogLevel, d.EtcdLogLevel)
	b.String("metrics-addr", c.MetricsAddr, d.MetricsAddr)
	b.Raw(c.Log.Args()...)
	return b.Args()
}

// SeedSpec builds the seed spec from --seed-members and
// --seed-etcd-version: both or neither (nil).
func (c Config) SeedSpec() (*control.Spec, error) {
	switch {
	case c.SeedMembers == 0 && c.SeedEtcdVersion == "":
		return nil, nil
	case c.SeedMembers == 0 || c.SeedEtcdVersion == "":
		return nil, errors.New("--seed-members and --seed-etcd-version go together")
	}
	s := &control.Spec{MemberCount: c.SeedMembers, EtcdVersion: c.SeedEtcdVersion}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("--seed-members, --seed-etcd-version: %w", err)
	}
	return s, nil
}

// ParsePeers parses "id=host:port,...".
func ParsePeers(s string) (discovery.Static, error) {
	var out discovery.Static
	for i, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		id, addr, ok := strings.Cut(part, "=")
		p := discovery.Peer{ID: id, ManagerAddr: addr}
		if !ok {
			return nil, fmt.Errorf("--peers: entry %d %q is not id=host:port", i, part)
		}
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("--peers: entry %d %q: %w", i, part, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// Validate returns every problem a user can cause with the flags, naming
// the flag; what only the machine can tell (the volume's slot, the default
// route) is checked when the command starts.
func (c Config) Validate() error {
	var errs []error
	if err := (control.Layout{Cluster: c.ClusterName, EtcdCluster: c.EtcdCluster}).Validate(); err != nil {
		errs = append(errs, fmt.Errorf("--cluster-name, --etcd-cluster: %w", err))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir: required"))
	}
	if !filepath.IsAbs(c.BinDirRoot) {
		errs = append(errs, fmt.Errorf("--etcd-bin-dir-root: %q is not an absolute path", c.BinDirRoot))
	}
	if c.Address != "" && net.ParseIP(c.Address) == nil {
		errs = append(errs, fmt.Errorf("--address: %q is not an IP address", c.Address))
	}
	for _, p := range []struct {
		flag string
		v    int
	}{{"--peer-port", c.PeerPort}, {"--client-port", c.ClientPort}, {"--manager-port", c.ManagerPort}} {
		if p.v < 0 || p.v > 65535 {
			errs = append(errs, fmt.Errorf("%s: %d is not a port (1 to 65535, or 0 for the default)", p.flag, p.v))
		}
	}
	if _, err := c.SeedSpec(); err != nil {
		errs = append(errs, err)
	}
	if c.Store.URL == "" {
		errs = append(errs, errors.New("--store: required"))
	} else if err := c.Store.Validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.validateDiscovery()...)
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--tick", c.Tick}, {"--lease-duration", c.LeaseDuration}, {"--peer-timeout", c.PeerTimeout}, {"--dead-member-threshold", c.DeadMemberThreshold}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s: %s is not positive", d.flag, d.v))
		}
	}
	// The lease's safety bound (docs/etcd-manager.md, "Leader election
	// and failover"): a holder acts for half a lease after a renewal
	// began, and a peer call begun then must end before anyone else can
	// take the lease.
	if c.Tick > 0 && c.LeaseDuration > 0 && c.LeaseDuration < 2*c.Tick {
		errs = append(errs, fmt.Errorf("--lease-duration: %s must be at least twice --tick (%s)", c.LeaseDuration, c.Tick))
	}
	if c.PeerTimeout > 0 && c.LeaseDuration > 0 && 2*c.PeerTimeout > c.LeaseDuration {
		errs = append(errs, fmt.Errorf("--peer-timeout: %s must be at most half --lease-duration (%s), or two leaders could act at once", c.PeerTimeout, c.LeaseDuration))
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--backup-interval", c.BackupInterval}, {"--verify-interval", c.VerifyInterval}, {"--delta-interval", c.DeltaInterval}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s: %s is negative (0 turns it off)", d.flag, d.v))
		}
	}
	if c.RetentionHourlyDays < 0 || c.RetentionDailyDays < 0 {
		errs = append(errs, fmt.Errorf("--backup-retention-hourly-days, --backup-retention-daily-days: %d, %d: days may not be negative", c.RetentionHourlyDays, c.RetentionDailyDays))
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			errs = append(errs, fmt.Errorf("--metrics-addr: %q is not host:port", c.MetricsAddr))
		}
	}
	if err := c.Log.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c Config) validateDiscovery() []error {
	var errs []error
	if len(c.Discovery) == 0 {
		errs = append(errs, errors.New("--discovery: empty; one or more of store, static, gossip, aws-volumes"))
	}
	for i, d := range c.Discovery {
		switch d {
		case DiscoveryStore, DiscoveryGossip:
		case DiscoveryAWSVolumes:
			errs = append(errs, validateAWS(c.AWS)...)
		case DiscoveryStatic:
			if _, err := ParsePeers(c.Peers); err != nil {
				errs = append(errs, err)
			} else if strings.TrimSpace(c.Peers) == "" {
				errs = append(errs, errors.New("--peers: required with --discovery static"))
			}
		default:
			errs = append(errs, fmt.Errorf("--discovery: %q is not store, static, gossip or aws-volumes", d))
		}
		if slices.Index(c.Discovery, d) != i {
			errs = append(errs, fmt.Errorf("--discovery: %q is named twice", d))
		}
	}
	if slices.Contains(c.Discovery, DiscoveryGossip) {
		if _, _, err := net.SplitHostPort(c.GossipAddr); err != nil {
			errs = append(errs, fmt.Errorf("--gossip-addr: %q is not host:port", c.GossipAddr))
		}
	}
	return errs
}

// NewDiscovery builds the backends --discovery names, in its order: the
// store registry under the control area's peers/ (records live for four
// lease durations), the static --peers, and gossip through --gossip-addr
// (records leased for four lease durations) and the EBS volumes of the
// etcd cluster (aws-volumes, peers at their holders' private addresses and
// the manager port).
func (c Config) NewDiscovery(st store.Store) (discovery.Discovery, error) {
	ttl := 4 * c.LeaseDuration
	var ds discovery.Union
	for _, name := range c.Discovery {
		switch name {
		case DiscoveryStore:
			l := control.Layout{Cluster: c.ClusterName, EtcdCluster: c.EtcdCluster}
			ds = append(ds, discovery.NewStoreRegistry(st, l.PeersPrefix(), ttl, nil))
		case DiscoveryStatic:
			peers, err := ParsePeers(c.Peers)
			if err != nil {
				return nil, err
			}
			ds = append(ds, peers)
		case DiscoveryGossip:
			ds = append(ds, discovery.Gossip{Client: localapi.Client{Addr: c.GossipAddr}, EtcdCluster: c.EtcdCluster, Lease: ttl})
		case DiscoveryAWSVolumes:
			port := c.ManagerPort
			if port == 0 {
				port = manager.DefaultConfig(c.ClusterName, c.EtcdCluster).ManagerPort
			}
			l := &awsVolumeLister{spec: c.AWS, cluster: c.ClusterName, etcdCluster: c.EtcdCluster}
			ds = append(ds, discovery.AWSVolumes{List: l.List, ManagerPort: port})
		default:
			return nil, fmt.Errorf("--discovery: %q is not store, static, gossip or aws-volumes", name)
		}
	}
	switch len(ds) {
	case 0:
		return nil, errors.New("--discovery: empty; one or more of store, static, gossip, aws-volumes")
	case 1:
		return ds[0], nil
	}
	return ds, nil
}

// Manager returns the manager configuration the flags select: the etcd
// cluster's defaults (ports) overridden by every flag given. The stores,
// the discovery backends (NewDiscovery), the identity read from the volume
// when ID is empty, the default address, the logger and the metrics
// registry are the command's to attach.
func (c Config) Manager() (manager.Config, error) {
	m := manager.DefaultConfig(c.ClusterName, c.EtcdCluster)
	m.ID, m.DataDir, m.BinDirRoot, m.Address = c.ID, c.DataDir, c.BinDirRoot, c.Address
	if c.PeerPort != 0 {
		m.PeerPort = c.PeerPort
	}
	if c.ClientPort != 0 {
		m.ClientPort = c.ClientPort
	}
	if c.ManagerPort != 0 {
		m.ManagerPort = c.ManagerPort
	}
	m.DNSSuffix, m.AdvertiseNames, m.HostsFile = c.DNSSuffix, c.AdvertiseNames, c.HostsFile
	m.APIServerClientCertDir, m.LocalClientAddress = c.APIServerClientCertDir, c.LocalClientAddress
	m.ExtraSANs = append([]string(nil), c.ExtraSANs...)
	seed, err := c.SeedSpec()
	if err != nil {
		return m, err
	}
	m.Seed = seed
	m.Tick, m.LeaseDuration, m.PeerTimeout, m.DeadMemberThreshold = c.Tick, c.LeaseDuration, c.PeerTimeout, c.DeadMemberThreshold
	m.Backups.Interval, m.Backups.VerifyInterval, m.Backups.DeltaInterval = c.BackupInterval, c.VerifyInterval, c.DeltaInterval
	m.Backups.Retention.HourlyDays, m.Backups.Retention.DailyDays = c.RetentionHourlyDays, c.RetentionDailyDays
	m.EtcdLogLevel = c.EtcdLogLevel
	return m, nil
}
