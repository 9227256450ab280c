// Package config holds the versioned configuration API: the cluster spec
// (cluster.yaml) and the node configuration of an instance group
// (nodeup/<group>.yaml), with strict decoding, defaulting in one place,
// validation that names field paths, and a stable hash.
//
// ParseCluster and ParseNodeConfig (or LoadClusterFile and
// LoadNodeConfigFile) decode, default and validate in one call; every error
// they return is an *Errors listing each problem as
// <source>:<line>:<col>: <field path>: <message>. docs/configuration.md is
// the reference for every field.
package config

// APIVersion is the only configuration API version so far.
const APIVersion = "agents.kopsnode.io/v1alpha1"

// Kinds of documents.
const (
	KindCluster    = "Cluster"
	KindNodeConfig = "NodeConfig"
)

// TypeMeta identifies a document's schema.
type TypeMeta struct {
	APIVersion string `yaml:"apiVersion" json:"apiVersion"`
	Kind       string `yaml:"kind" json:"kind"`
}

// ObjectMeta names a document.
type ObjectMeta struct {
	Name string `yaml:"name" json:"name"`
}

// Cluster is the cluster-wide spec, stored at <store>/<cluster>/cluster.yaml.
type Cluster struct {
	TypeMeta `yaml:",inline" json:",inline"`
	Metadata ObjectMeta  `yaml:"metadata" json:"metadata"`
	Spec     ClusterSpec `yaml:"spec" json:"spec"`
}

// ClusterSpec is what every node of the cluster shares.
type ClusterSpec struct {
	// KubernetesVersion is a semantic version such as "1.31.2".
	KubernetesVersion string               `yaml:"kubernetesVersion" json:"kubernetesVersion"`
	Networking        NetworkingSpec       `yaml:"networking" json:"networking"`
	EtcdClusters      []EtcdClusterSpec    `yaml:"etcdClusters,omitempty" json:"etcdClusters,omitempty"`
	Gossip            *GossipSpec          `yaml:"gossip,omitempty" json:"gossip,omitempty"`
	ContainerRuntime  ContainerRuntimeSpec `yaml:"containerRuntime" json:"containerRuntime"`
	// Assets says where `nodeup render` finds the release files the node
	// configurations pin (docs/cluster-render.md).
	Assets *ClusterAssetsSpec `yaml:"assets,omitempty" json:"assets,omitempty"`
	// Kubelet holds the kubelet settings every node of the cluster shares;
	// `nodeup render` copies them into each node configuration.
	Kubelet *ClusterKubeletSpec `yaml:"kubelet,omitempty" json:"kubelet,omitempty"`
	// InstanceGroups are the groups of machines `nodeup render` writes a
	// node configuration for (default: "control-plane" and "nodes").
	InstanceGroups []InstanceGroupSpec `yaml:"instanceGroups,omitempty" json:"instanceGroups,omitempty"`
	// Volume chooses where the etcd members' volumes come from; `nodeup
	// render` copies it into every control-plane node configuration.
	Volume *VolumeProviderSpec `yaml:"volume,omitempty" json:"volume,omitempty"`
}

// ClusterAssetsSpec locates the release mirror that `nodeup render` pins
// every asset from.
type ClusterAssetsSpec struct {
	// Mirror is the base URL of the release mirror (http or https),
	// laid out as package releases describes; air-gapped clusters point it
	// at their own copy.
	Mirror string `yaml:"mirror" json:"mirror"`
	// NodeupVersion is the kopsnode release whose nodeup, protokube and
	// etcd-manager the nodes run (default: the version of the nodeup that
	// renders).
	NodeupVersion string `yaml:"nodeupVersion,omitempty" json:"nodeupVersion,omitempty"`
	// AdditionalImages are names of extra OCI image tarballs on the mirror
	// (images/<name>.tar) that every node imports into containerd.
	AdditionalImages []string `yaml:"additionalImages,omitempty" json:"additionalImages,omitempty"`
}

// ClusterKubeletSpec are the kubelet settings that make sense for every
// node of a cluster (the node-specific ones are in KubeletSpec).
type ClusterKubeletSpec struct {
	// FailCgroupV1 is KubeletSpec.FailCgroupV1 for every node.
	FailCgroupV1 *bool `yaml:"failCgroupV1,omitempty" json:"failCgroupV1,omitempty"`
	// MaxPods is KubeletSpec.MaxPods for every node (default 110).
	MaxPods int `yaml:"maxPods,omitempty" json:"maxPods,omitempty"`
	// ClusterDomain is KubeletSpec.ClusterDomain (default cluster.local).
	ClusterDomain string `yaml:"clusterDomain,omitempty" json:"clusterDomain,omitempty"`
	// ResolvConf is KubeletSpec.ResolvConf for every node.
	ResolvConf string `yaml:"resolvConf,omitempty" json:"resolvConf,omitempty"`
	// ExtraArgs is KubeletSpec.ExtraArgs for every node.
	ExtraArgs map[string]string `yaml:"extraArgs,omitempty" json:"extraArgs,omitempty"`
	// EvictionHard is KubeletSpec.EvictionHard for every node.
	EvictionHard map[string]string `yaml:"evictionHard,omitempty" json:"evictionHard,omitempty"`
}

// InstanceGroupSpec is a group of machines that share one node
// configuration (<store>/<cluster>/nodeup/<name>.yaml).
type InstanceGroupSpec struct {
	Name string `yaml:"name" json:"name"`
	Role Role   `yaml:"role" json:"role"`
	// Taints are the kubelet's registration taints (key[=value]:Effect).
	// A control-plane group without taints (an empty list counts as none)
	// gets node-role.kubernetes.io/control-plane:NoSchedule.
	Taints []string `yaml:"taints,omitempty" json:"taints,omitempty"`
	// NodeLabels are labels the kubelet registers the node with.
	NodeLabels map[string]string `yaml:"nodeLabels,omitempty" json:"nodeLabels,omitempty"`
}

// NodeConfigKey is the store key of an instance group's node configuration.
func NodeConfigKey(cluster, group string) string { return cluster + "/nodeup/" + group + ".yaml" }

// NodeConfig is the complete configuration nodeup applies to one instance
// group, stored at <store>/<cluster>/nodeup/<group>.yaml (NodeConfigKey). Its
// sha256 is pinned in the node's userdata.
type NodeConfig struct {
	TypeMeta `yaml:",inline" json:",inline"`
	Metadata ObjectMeta     `yaml:"metadata" json:"metadata"` // the instance group's name
	Spec     NodeConfigSpec `yaml:"spec" json:"spec"`
}

// Role is a node's role.
type Role string

const (
	RoleControlPlane Role = "control-plane"
	RoleNode         Role = "node"
)

// NodeConfigSpec is what nodeup needs to converge a node of the group.
type NodeConfigSpec struct {
	ClusterName       string               `yaml:"clusterName" json:"clusterName"`
	Role              Role                 `yaml:"role" json:"role"`
	KubernetesVersion string               `yaml:"kubernetesVersion" json:"kubernetesVersion"`
	Assets            []Asset              `yaml:"assets,omitempty" json:"assets,omitempty"`
	ContainerRuntime  ContainerRuntimeSpec `yaml:"containerRuntime" json:"containerRuntime"`
	Kubelet           KubeletSpec          `yaml:"kubelet" json:"kubelet"`
	KubeProxy         *KubeProxySpec       `yaml:"kubeProxy,omitempty" json:"kubeProxy,omitempty"`
	Networking        NetworkingSpec       `yaml:"networking" json:"networking"`
	// Sysctls maps a sysctl name (net.ipv4.ip_forward) to its value.
	Sysctls map[string]string `yaml:"sysctls,omitempty" json:"sysctls,omitempty"`
	// KernelModules are loaded at boot and kept in /etc/modules-load.d.
	KernelModules []string `yaml:"kernelModules,omitempty" json:"kernelModules,omitempty"`
	Packages      []string `yaml:"packages,omitempty" json:"packages,omitempty"`
	// EtcdClusters are run on control-plane nodes (copied from the cluster spec).
	EtcdClusters []EtcdClusterSpec `yaml:"etcdClusters,omitempty" json:"etcdClusters,omitempty"`
	Gossip       *GossipSpec       `yaml:"gossip,omitempty" json:"gossip,omitempty"`
	// ControlPlane configures kube-apiserver, kube-controller-manager and
	// kube-scheduler; control-plane nodes only (defaulted there).
	ControlPlane *ControlPlaneSpec `yaml:"controlPlane,omitempty" json:"controlPlane,omitempty"`
	// Volume chooses the provider of the etcd members' volumes and its
	// settings; control-plane nodes only (defaulted there to metal).
	Volume *VolumeProviderSpec `yaml:"volume,omitempty" json:"volume,omitempty"`
}

// Volume providers.
const (
	VolumeProviderMetal = "metal"
	VolumeProviderAWS   = "aws"
)

// VolumeProviderSpec chooses the provider of the etcd members' volumes
// (package volumes; one folder per provider) and holds its settings. The
// per etcd cluster choices (size, device, ...) are in VolumeSpec.
type VolumeProviderSpec struct {
	// Provider is "metal" (default: disks that exist on the machine) or
	// "aws" (EBS volumes).
	Provider string           `yaml:"provider,omitempty" json:"provider,omitempty"`
	Metal    *MetalVolumeSpec `yaml:"metal,omitempty" json:"metal,omitempty"`
	AWS      *AWSVolumeSpec   `yaml:"aws,omitempty" json:"aws,omitempty"`
}

// MetalVolumeSpec configures the metal provider.
type MetalVolumeSpec struct {
	// Scan lists absolute glob patterns of the devices searched for volumes
	// already formatted for the etcd cluster (found by their identity
	// file). Empty: every block device with a non-zero size.
	Scan []string `yaml:"scan,omitempty" json:"scan,omitempty"`
}

// AWSVolumeSpec configures the aws provider.
type AWSVolumeSpec struct {
	// Region is the EC2 region (default: the instance's, from the
	// instance metadata service).
	Region string `yaml:"region,omitempty" json:"region,omitempty"`
	// EC2Endpoint is the URL of the EC2 API (default: AWS's for the region).
	EC2Endpoint string `yaml:"ec2Endpoint,omitempty" json:"ec2Endpoint,omitempty"`
	// IMDSEndpoint is the URL of the instance metadata service (default:
	// AWS's, http://169.254.169.254).
	IMDSEndpoint string `yaml:"imdsEndpoint,omitempty" json:"imdsEndpoint,omitempty"`
}

// Asset is a file nodeup downloads, pinned by sha256, from one or more mirrors.
type Asset struct {
	// Name identifies the asset to the model builders: "kubelet",
	// "containerd", "runc", "cni-plugins", "protokube", "etcd-manager", ...
	Name   string   `yaml:"name" json:"name"`
	SHA256 string   `yaml:"sha256" json:"sha256"`
	URLs   []string `yaml:"urls" json:"urls"`
	// Extract says the asset is an archive (".tar.gz") to unpack.
	Extract bool `yaml:"extract,omitempty" json:"extract,omitempty"`
}

// ContainerRuntimeSpec selects and configures the container runtime.
type ContainerRuntimeSpec struct {
	// Name is "containerd" (default) or "docker" (legacy).
	Name string `yaml:"name,omitempty" json:"name,omitempty"`
	// SandboxImage is the pause image.
	SandboxImage string `yaml:"sandboxImage,omitempty" json:"sandboxImage,omitempty"`
	// SystemdCgroup selects the systemd cgroup driver (default true).
	SystemdCgroup *bool `yaml:"systemdCgroup,omitempty" json:"systemdCgroup,omitempty"`
	// RegistryMirrors maps a registry host to mirror endpoints.
	RegistryMirrors map[string][]string `yaml:"registryMirrors,omitempty" json:"registryMirrors,omitempty"`
	// Version is the version of the containerd the node installs ("2.4.2").
	// Its major version selects the schema of containerd's configuration
	// file; empty means 2.x.
	Version string `yaml:"version,omitempty" json:"version,omitempty"`
	// RestrictOOMScoreAdj keeps containers' OOM score adjustment at or
	// above containerd's own; needed where containerd lacks
	// CAP_SYS_RESOURCE (in some containers), or pod sandboxes fail.
	RestrictOOMScoreAdj bool `yaml:"restrictOOMScoreAdj,omitempty" json:"restrictOOMScoreAdj,omitempty"`
}

// KubeletSpec configures the kubelet.
type KubeletSpec struct {
	// APIServer is the URL of the API server the kubelet talks to.
	APIServer     string            `yaml:"apiServer,omitempty" json:"apiServer,omitempty"`
	ClusterDNS    string            `yaml:"clusterDNS,omitempty" json:"clusterDNS,omitempty"`
	ClusterDomain string            `yaml:"clusterDomain,omitempty" json:"clusterDomain,omitempty"`
	MaxPods       int               `yaml:"maxPods,omitempty" json:"maxPods,omitempty"`
	NodeLabels    map[string]string `yaml:"nodeLabels,omitempty" json:"nodeLabels,omitempty"`
	Taints        []string          `yaml:"taints,omitempty" json:"taints,omitempty"`
	ExtraArgs     map[string]string `yaml:"extraArgs,omitempty" json:"extraArgs,omitempty"`
	// FailCgroupV1 is the KubeletConfiguration setting of the same name:
	// false lets the kubelet start on a cgroup v1 host. Unset: the
	// kubelet's default.
	FailCgroupV1 *bool `yaml:"failCgroupV1,omitempty" json:"failCgroupV1,omitempty"`
	// ResolvConf is the resolver file the kubelet gives pods with the
	// Default DNS policy (kubelet default /etc/resolv.conf).
	ResolvConf string `yaml:"resolvConf,omitempty" json:"resolvConf,omitempty"`
	// EvictionHard is the KubeletConfiguration setting of the same name:
	// eviction signal (memory.available, nodefs.available, ...) to
	// threshold (a quantity such as 1Gi, or a percentage such as 10%).
	// Unset: the kubelet's defaults. Set: the kubelet uses exactly these.
	EvictionHard map[string]string `yaml:"evictionHard,omitempty" json:"evictionHard,omitempty"`
}

// KubeProxySpec configures kube-proxy, which nodeup runs on every node
// whose configuration has a kube-proxy asset.
type KubeProxySpec struct {
	// Enabled false keeps kube-proxy off even with the asset (default true).
	Enabled *bool `yaml:"enabled,omitempty" json:"enabled,omitempty"`
}

// Networking modes.
const (
	NetworkingKubenet  = "kubenet"
	NetworkingCNI      = "cni"
	NetworkingExternal = "external"
)

// NetworkingSpec selects pod networking.
type NetworkingSpec struct {
	// Mode is "kubenet" (default), "cni" or "external".
	Mode string `yaml:"mode" json:"mode"`
	// Provider names the CNI provider when Mode is "cni" (for example
	// "bridge", "flannel", "calico", "cilium").
	Provider          string `yaml:"provider,omitempty" json:"provider,omitempty"`
	PodCIDR           string `yaml:"podCIDR,omitempty" json:"podCIDR,omitempty"`
	ServiceCIDR       string `yaml:"serviceCIDR,omitempty" json:"serviceCIDR,omitempty"`
	NonMasqueradeCIDR string `yaml:"nonMasqueradeCIDR,omitempty" json:"nonMasqueradeCIDR,omitempty"`
	MTU               int    `yaml:"mtu,omitempty" json:"mtu,omitempty"`
}

// EtcdClusterSpec describes one etcd cluster (main, events).
type EtcdClusterSpec struct {
	Name string `yaml:"name" json:"name"`
	// Members is the member count: 1, 3 or 5.
	Members int    `yaml:"members" json:"members"`
	Version string `yaml:"version" json:"version"`
	// PeerPort, ClientPort and ManagerPort default from the cluster name
	// (main: 2380/4001/3994, events: 2381/4002/3995).
	PeerPort    int        `yaml:"peerPort,omitempty" json:"peerPort,omitempty"`
	ClientPort  int        `yaml:"clientPort,omitempty" json:"clientPort,omitempty"`
	ManagerPort int        `yaml:"managerPort,omitempty" json:"managerPort,omitempty"`
	Volume      VolumeSpec `yaml:"volume" json:"volume"`
	Backups     BackupSpec `yaml:"backups" json:"backups"`
}

// VolumeSpec describes the volume of each member of an etcd cluster: its
// size for providers that create volumes (aws), and for the metal provider
// the disk a new member's volume is made on, chosen by at most one of
// Device, PartitionLabel and Serials.
type VolumeSpec struct {
	SizeGiB int    `yaml:"sizeGiB,omitempty" json:"sizeGiB,omitempty"`
	Type    string `yaml:"type,omitempty" json:"type,omitempty"`
	// IOPS is for volume types that take it.
	IOPS int `yaml:"iops,omitempty" json:"iops,omitempty"`
	// Device is the block device (metal) that holds, or will hold, this
	// etcd cluster's member volume, at the same path on every machine of
	// the group (for example /dev/vdb or /dev/disk/by-path/...). It is
	// formatted only when blank.
	Device string `yaml:"device,omitempty" json:"device,omitempty"`
	// PartitionLabel chooses the disk (metal) by its GPT partition name
	// (/dev/disk/by-partlabel/<name>).
	PartitionLabel string `yaml:"partitionLabel,omitempty" json:"partitionLabel,omitempty"`
	// Serials chooses the disk (metal) by its serial number: the machine's
	// disk whose serial is one of these.
	Serials []string `yaml:"serials,omitempty" json:"serials,omitempty"`
}

// BackupSpec configures scheduled backups to the state store.
type BackupSpec struct {
	// Interval is a Go duration (default "15m", at least "1m").
	Interval string `yaml:"interval,omitempty" json:"interval,omitempty"`
	// Store overrides the backup location (default: the state store).
	Store string `yaml:"store,omitempty" json:"store,omitempty"`
	// VerifyInterval is how often the etcd-manager leader proves the
	// newest backup good by a test restore, a Go duration of at least
	// "1h"; unset: etcd-manager's default, daily (docs/etcd-manager.md,
	// "Verification").
	VerifyInterval string `yaml:"verifyInterval,omitempty" json:"verifyInterval,omitempty"`
	// DeltaInterval is the most a change waits before the etcd-manager
	// leader writes it to a delta segment (point-in-time recovery), a Go
	// duration from "1s" to "1h", or "0s" for no deltas; unset:
	// etcd-manager's default, 5s (docs/etcd-manager.md, "Deltas").
	DeltaInterval string `yaml:"deltaInterval,omitempty" json:"deltaInterval,omitempty"`
	// Retention says how long full backups and delta segments are kept
	// (docs/etcd-manager.md, "Retention").
	Retention RetentionSpec `yaml:"retention,omitempty" json:"retention,omitzero"`
}

// RetentionSpec is the backup retention of an etcd cluster: everything
// from the last hour is kept, then one full backup per hour for HourlyDays
// and one per day for DailyDays; the newest verified backup is never
// deleted.
type RetentionSpec struct {
	// HourlyDays (0 to 3650; 0 keeps no hourly backups). Unset: 7
	// (DefaultRetentionHourlyDays, etcd-manager's default).
	HourlyDays *int `yaml:"hourlyDays,omitempty" json:"hourlyDays,omitempty"`
	// DailyDays (0 to 3650; 0 keeps no daily backups). Unset: 90
	// (DefaultRetentionDailyDays).
	DailyDays *int `yaml:"dailyDays,omitempty" json:"dailyDays,omitempty"`
}

// GossipSpec configures gossip membership and DNS.
type GossipSpec struct {
	// Port is the memberlist port (default 3996).
	Port int `yaml:"port,omitempty" json:"port,omitempty"`
	// Seeds selects the seed provider: "store" (default), "static" or "aws".
	Seeds string `yaml:"seeds,omitempty" json:"seeds,omitempty"`
	// StaticSeeds are host:port seeds when Seeds is "static".
	StaticSeeds []string `yaml:"staticSeeds,omitempty" json:"staticSeeds,omitempty"`
	// DNSListen is where the cluster DNS server listens, IP:port (default
	// 127.0.0.2:53, a node-local loopback address).
	DNSListen string `yaml:"dnsListen,omitempty" json:"dnsListen,omitempty"`
	// Forward makes the DNS server forward names outside the zone to the
	// resolvers of /etc/resolv.conf.
	Forward bool `yaml:"forward,omitempty" json:"forward,omitempty"`
}
