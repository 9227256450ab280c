package podnet

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/kopsnode/agents/cni"
	"github.com/kopsnode/agents/pkg/flagargs"
	"github.com/kopsnode/agents/pkg/paths"
)

// Modes of Config.Mode.
const (
	ModeOff     = ""
	ModeKubenet = "kubenet"
)

// DefaultKubeconfig is the kubelet's kubeconfig, with which a node may read
// its own Node object.
const DefaultKubeconfig = paths.KubeletKubeconfig

// Config is podnet's part of `protokube gossip`; every field has a flag.
type Config struct {
	// Mode is "kubenet" to run podnet, empty for off.
	Mode string
	// Kubeconfig reads the Node object.
	Kubeconfig string
	// NodeName is the Node object's name; empty means the gossip node name.
	NodeName string
	// ClusterCIDR is the cluster's pod range (networking.podCIDR).
	ClusterCIDR string
	// NonMasqueradeCIDR is the range reached without NAT
	// (networking.nonMasqueradeCIDR).
	NonMasqueradeCIDR string
	// CNIConfDir is where the kubenet configuration is written.
	CNIConfDir string
	// MTU of the pod bridge; 0 means cni.DefaultMTU.
	MTU int
	// Resync is how often the Node, the routes and the masquerade rules are
	// checked again without a record change (they also heal changes made
	// by hand).
	Resync time.Duration
}

// DefaultConfig returns the defaults (podnet off).
func DefaultConfig() Config {
	return Config{
		Kubeconfig: DefaultKubeconfig,
		CNIConfDir: cni.ConfDir,
		Resync:     30 * time.Second,
	}
}

// AddFlags binds the configuration to flags.
func (c *Config) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Mode, "pod-network", c.Mode, "pod networking run by protokube: kubenet (routes between nodes' pod ranges over gossip, masquerade, CNI config) or empty for none")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", c.Kubeconfig, "kubeconfig to read this node's Node object (its spec.podCIDR) with, for --pod-network")
	fs.StringVar(&c.NodeName, "kube-node-name", c.NodeName, "name of this node's Node object (default: --node-name)")
	fs.StringVar(&c.ClusterCIDR, "cluster-pod-cidr", c.ClusterCIDR, "the cluster's pod range (networking.podCIDR), for --pod-network")
	fs.StringVar(&c.NonMasqueradeCIDR, "non-masquerade-cidr", c.NonMasqueradeCIDR, "traffic from pods to this range is not masqueraded (networking.nonMasqueradeCIDR), for --pod-network")
	fs.StringVar(&c.CNIConfDir, "cni-conf-dir", c.CNIConfDir, "directory of the CNI configuration written for --pod-network=kubenet")
	fs.IntVar(&c.MTU, "pod-mtu", c.MTU, "MTU of the pod bridge (0: "+strconv.Itoa(cni.DefaultMTU)+")")
	fs.DurationVar(&c.Resync, "pod-network-resync", c.Resync, "how often routes, masquerade rules and the Node are checked without a change")
}

// Args renders the flags of a configuration, the exact inverse of AddFlags
// from DefaultConfig, for the unit that nodeup writes. Defaults are left
// out, so the default configuration (podnet off) renders nothing.
func (c Config) Args() []string {
	d := DefaultConfig()
	var b flagargs.Builder
	b.String("pod-network", c.Mode, d.Mode)
	b.String("kubeconfig", c.Kubeconfig, d.Kubeconfig)
	b.String("kube-node-name", c.NodeName, d.NodeName)
	b.String("cluster-pod-cidr", c.ClusterCIDR, d.ClusterCIDR)
	b.String("non-masquerade-cidr", c.NonMasqueradeCIDR, d.NonMasqueradeCIDR)
	b.String("cni-conf-dir", c.CNIConfDir, d.CNIConfDir)
	b.Int("pod-mtu", c.MTU, d.MTU)
	b.Duration("pod-network-resync", c.Resync, d.Resync)
	return b.Args()
}

// Validate returns every problem, naming the flag.
func (c Config) Validate() error {
	switch c.Mode {
	case ModeOff:
		return nil
	case ModeKubenet:
	default:
		return fmt.Errorf("--pod-network: %q is not kubenet (or empty for none)", c.Mode)
	}
	var errs []error
	if c.Kubeconfig == "" {
		errs = append(errs, errors.New("--kubeconfig: required with --pod-network"))
	}
	cluster, err := parseCIDR(c.ClusterCIDR)
	if err != nil {
		errs = append(errs, fmt.Errorf("--cluster-pod-cidr: %w", err))
	}
	nonMasq, err2 := parseCIDR(c.NonMasqueradeCIDR)
	if err2 != nil {
		errs = append(errs, fmt.Errorf("--non-masquerade-cidr: %w", err2))
	}
	if err == nil && err2 == nil && !prefixContains(nonMasq, cluster) {
		errs = append(errs, fmt.Errorf("--non-masquerade-cidr: %s does not contain --cluster-pod-cidr %s: traffic between pods would be masqueraded", nonMasq, cluster))
	}
	if c.CNIConfDir == "" {
		errs = append(errs, errors.New("--cni-conf-dir: required with --pod-network=kubenet"))
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 9216) {
		errs = append(errs, fmt.Errorf("--pod-mtu: %d is out of range (576 to 9216, or 0)", c.MTU))
	}
	if c.Resync <= 0 {
		errs = append(errs, fmt.Errorf("--pod-network-resync: must be positive, got %s", c.Resync))
	}
	return errors.Join(errs...)
}

func parseCIDR(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, errors.New("required with --pod-network")
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%q is not an IPv4 CIDR", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set; did you mean %s?", s, p.Masked())
	}
	return p, nil
}
