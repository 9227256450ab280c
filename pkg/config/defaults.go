package config

import "github.com/kopsnode/agents/pkg/releases"

// Default values. They are applied by SetDefaults and nowhere else; the
// configuration reference (docs/configuration.md) lists them.
const (
	DefaultContainerRuntime  = "containerd"
	DefaultNetworkingMode    = NetworkingKubenet
	DefaultPodCIDR           = "100.96.0.0/11"
	DefaultServiceCIDR       = "100.64.0.0/13"
	DefaultNonMasqueradeCIDR = "100.64.0.0/10"
	DefaultClusterDomain     = "cluster.local"
	DefaultMaxPods           = 110
	DefaultEtcdVolumeSizeGiB = 20
	DefaultBackupInterval    = "15m"
	DefaultGossipPort        = 3996
	DefaultGossipSeeds       = SeedsStore
	DefaultDNSListen         = "127.0.0.2:53"
	// Backup retention, in days (etcdClusters[].backups.retention). Left
	// unset (not defaulted here, so the hash of existing configurations
	// stays), they are etcd-manager's flag defaults, which are these.
	DefaultRetentionHourlyDays = 7
	DefaultRetentionDailyDays  = 90
	MaxRetentionDays           = 3650
	// DefaultControlPlaneAPIServer is where kubelets on control-plane nodes
	// reach the API server: the one on the same machine.
	DefaultControlPlaneAPIServer = "https://127.0.0.1"
	// DNSZonePrefix is prepended to the cluster name to make the default
	// internal zone.
	DNSZonePrefix = "internal."
	// DefaultControlPlaneTaint keeps ordinary pods off control-plane nodes
	// (a control-plane instance group without taints gets it).
	DefaultControlPlaneTaint = "node-role.kubernetes.io/control-plane:NoSchedule"
	// Names of the instance groups a cluster spec without instanceGroups
	// gets.
	DefaultControlPlaneGroup = "control-plane"
	DefaultNodesGroup        = "nodes"
)

// Gossip seed providers.
const (
	SeedsStore  = "store"
	SeedsStatic = "static"
	SeedsAWS    = "aws"
)

// EtcdPorts are the ports of one etcd cluster on a control-plane node.
type EtcdPorts struct {
	Peer, Client, Manager int
}

// DefaultEtcdPorts returns the default ports of the etcd cluster with the
// given name, and false for names that have no defaults (their ports must be
// set explicitly).
func DefaultEtcdPorts(name string) (EtcdPorts, bool) {
	switch name {
	case "main":
		return EtcdPorts{Peer: 2380, Client: 4001, Manager: 3994}, true
	case "events":
		return EtcdPorts{Peer: 2381, Client: 4002, Manager: 3995}, true
	}
	return EtcdPorts{}, false
}

// SetDefaults fills in every field of a *Cluster or a *NodeConfig that was
// left unset. It is the only place defaults are applied; call it after
// decoding and before validating. It is idempotent. Other types are ignored.
func SetDefaults(doc any) {
	switch d := doc.(type) {
	case *Cluster:
		d.SetDefaults()
	case *NodeConfig:
		d.SetDefaults()
	}
}

// SetDefaults fills in the fields of the cluster spec that were left unset.
func (c *Cluster) SetDefaults() {
	s := &c.Spec
	defaultNetworking(&s.Networking)
	defaultContainerRuntime(&s.ContainerRuntime)
	for i := range s.EtcdClusters {
		defaultEtcdCluster(&s.EtcdClusters[i])
	}
	defaultGossip(s.Gossip)
	defaultInstanceGroups(s)
	if s.Volume != nil {
		defaultVolumeProvider(s.Volume)
	}
}

// defaultVolumeProvider makes metal, the disks that exist on the machine,
// the provider when none is named.
func defaultVolumeProvider(v *VolumeProviderSpec) {
	if v.Provider == "" {
		v.Provider = VolumeProviderMetal
	}
}

// defaultInstanceGroups gives a cluster without instance groups one
// control-plane group and one worker group, and control-plane groups
// without taints the control-plane taint.
func defaultInstanceGroups(s *ClusterSpec) {
	if len(s.InstanceGroups) == 0 {
		s.InstanceGroups = []InstanceGroupSpec{
			{Name: DefaultControlPlaneGroup, Role: RoleControlPlane},
			{Name: DefaultNodesGroup, Role: RoleNode},
		}
	}
	for i := range s.InstanceGroups {
		g := &s.InstanceGroups[i]
		if g.Role == RoleControlPlane && g.Taints == nil {
			g.Taints = []string{DefaultControlPlaneTaint}
		}
	}
}

// SetDefaults fills in the fields of the node configuration that were left
// unset.
func (n *NodeConfig) SetDefaults() {
	s := &n.Spec
	defaultNetworking(&s.Networking)
	defaultContainerRuntime(&s.ContainerRuntime)
	k := &s.Kubelet
	if k.APIServer == "" {
		switch s.Role {
		case RoleControlPlane:
			k.APIServer = DefaultControlPlaneAPIServer
		case RoleNode:
			if s.ClusterName != "" {
				k.APIServer = "https://api." + DNSZonePrefix + s.ClusterName
			}
		}
	}
	if k.ClusterDomain == "" {
		k.ClusterDomain = DefaultClusterDomain
	}
	if k.MaxPods == 0 {
		k.MaxPods = DefaultMaxPods
	}
	if k.ClusterDNS == "" {
		// An invalid service range is reported by validation.
		if a, err := s.Networking.ClusterDNSIP(); err == nil {
			k.ClusterDNS = a.String()
		}
	}
	for i := range s.EtcdClusters {
		defaultEtcdCluster(&s.EtcdClusters[i])
	}
	defaultGossip(s.Gossip)
	defaultControlPlane(s)
	if s.Volume == nil && s.Role == RoleControlPlane {
		s.Volume = &VolumeProviderSpec{}
	}
	if s.Volume != nil {
		defaultVolumeProvider(s.Volume)
	}
}

func defaultNetworking(n *NetworkingSpec) {
	if n.Mode == "" {
		n.Mode = DefaultNetworkingMode
	}
	if n.PodCIDR == "" {
		n.PodCIDR = DefaultPodCIDR
	}
	if n.ServiceCIDR == "" {
		n.ServiceCIDR = DefaultServiceCIDR
	}
	if n.NonMasqueradeCIDR == "" {
		n.NonMasqueradeCIDR = DefaultNonMasqueradeCIDR
	}
}

// DefaultSandboxImage is the pause image of the newest release in the
// version table (pkg/releases, its one home): the one nodes import.
var DefaultSandboxImage = releases.Newest().Pause.Ref

func defaultContainerRuntime(r *ContainerRuntimeSpec) {
	if r.Name == "" {
		r.Name = DefaultContainerRuntime
	}
	if r.SandboxImage == "" {
		r.SandboxImage = DefaultSandboxImage
	}
	if r.SystemdCgroup == nil {
		t := true
		r.SystemdCgroup = &t
	}
}

func defaultEtcdCluster(e *EtcdClusterSpec) {
	if ports, ok := DefaultEtcdPorts(e.Name); ok {
		if e.PeerPort == 0 {
			e.PeerPort = ports.Peer
		}
		if e.ClientPort == 0 {
			e.ClientPort = ports.Client
		}
		if e.ManagerPort == 0 {
			e.ManagerPort = ports.Manager
		}
	}
	if e.Volume.SizeGiB == 0 {
		e.Volume.SizeGiB = DefaultEtcdVolumeSizeGiB
	}
	if e.Backups.Interval == "" {
		e.Backups.Interval = DefaultBackupInterval
	}
}

func defaultGossip(g *GossipSpec) {
	if g == nil {
		return
	}
	if g.Port == 0 {
		g.Port = DefaultGossipPort
	}
	if g.Seeds == "" {
		g.Seeds = DefaultGossipSeeds
	}
	if g.DNSListen == "" {
		g.DNSListen = DefaultDNSListen
	}
}
