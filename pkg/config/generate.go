package config

import "github.com/kopsnode/agents/pkg/releases"

// Versions NewCluster starts from: the newest release of the version table
// (which nodeup render can render) and its etcd.
var DefaultKubernetesVersion = releases.Newest().Kubernetes

const DefaultEtcdVersion = "3.6.16"

// NewCluster returns a valid cluster spec named name, with defaults applied:
// main and events etcd clusters of three members, kubenet networking, and
// gossip turned on (required for names ending in .k8s.local, harmless
// otherwise). Edit it and call Validate, or print it with Marshal.
func NewCluster(name string) *Cluster {
	c := &Cluster{
		TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindCluster},
		Metadata: ObjectMeta{Name: name},
		Spec: ClusterSpec{
			KubernetesVersion: DefaultKubernetesVersion,
			EtcdClusters: []EtcdClusterSpec{
				{Name: "main", Members: 3, Version: DefaultEtcdVersion},
				{Name: "events", Members: 3, Version: DefaultEtcdVersion},
			},
			Gossip: &GossipSpec{},
		},
	}
	c.SetDefaults()
	return c
}

// NewNodeConfig derives the node configuration of instance group group from
// a cluster spec: cluster name, Kubernetes version, networking, container
// runtime and gossip are copied, and control-plane groups get the etcd
// clusters and the volume provider. Assets, sysctls, packages and kubelet settings are left for the
// caller. The result has defaults applied; c is not modified.
func NewNodeConfig(c *Cluster, group string, role Role) *NodeConfig {
	cp := &Cluster{}
	if err := deepCopy(c, cp); err != nil {
		// Cluster holds only strings, numbers, bools, slices and maps, which
		// always round-trip through JSON.
		cp = &Cluster{Metadata: c.Metadata}
	}
	n := &NodeConfig{
		TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindNodeConfig},
		Metadata: ObjectMeta{Name: group},
		Spec: NodeConfigSpec{
			ClusterName:       cp.Metadata.Name,
			Role:              role,
			KubernetesVersion: cp.Spec.KubernetesVersion,
			ContainerRuntime:  cp.Spec.ContainerRuntime,
			Networking:        cp.Spec.Networking,
			Gossip:            cp.Spec.Gossip,
		},
	}
	if role == RoleControlPlane {
		n.Spec.EtcdClusters = cp.Spec.EtcdClusters
		n.Spec.Volume = cp.Spec.Volume
	}
	n.SetDefaults()
	return n
}
