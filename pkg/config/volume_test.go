package config

import "testing"

// TestValidateVolume: the volume provider and the metal disk choices, each
// problem reported at its field path.
func TestValidateVolume(t *testing.T) {
	cases := []struct {
		name, group string
		edit        func(n *NodeConfig)
		path, msg   string
	}{
		{"provider", "control-plane", func(n *NodeConfig) { n.Spec.Volume.Provider = "gce" }, "spec.volume.provider", `"gce" is not a volume provider`},
		{"aws block with metal", "control-plane", func(n *NodeConfig) { n.Spec.Volume.AWS = &AWSVolumeSpec{} }, "spec.volume.aws", `only used when provider is "aws"`},
		{"metal block with aws", "control-plane", func(n *NodeConfig) {
			clearDisks(n)
			n.Spec.Volume = &VolumeProviderSpec{Provider: VolumeProviderAWS, Metal: &MetalVolumeSpec{}}
		}, "spec.volume.metal", `only used when provider is "metal"`},
		{"scan pattern", "control-plane", func(n *NodeConfig) { n.Spec.Volume.Metal = &MetalVolumeSpec{Scan: []string{"/dev/vd*", "vd*"}} }, "spec.volume.metal.scan[1]", "not an absolute glob pattern"},
		{"aws endpoint", "control-plane", func(n *NodeConfig) {
			clearDisks(n)
			n.Spec.Volume = &VolumeProviderSpec{Provider: VolumeProviderAWS, AWS: &AWSVolumeSpec{EC2Endpoint: "ec2.local"}}
		}, "spec.volume.aws.ec2Endpoint", "not an http:// or https:// URL"},
		{"aws region", "control-plane", func(n *NodeConfig) {
			clearDisks(n)
			n.Spec.Volume = &VolumeProviderSpec{Provider: VolumeProviderAWS, AWS: &AWSVolumeSpec{Region: "EU West"}}
		}, "spec.volume.aws.region", "not a region name"},
		{"metal disk with aws", "control-plane", func(n *NodeConfig) {
			clearDisks(n)
			n.Spec.EtcdClusters[1].Volume.Serials = []string{"S"}
			n.Spec.Volume = &VolumeProviderSpec{Provider: VolumeProviderAWS}
		}, "spec.etcdClusters[1].volume", `choose disks of the "metal" provider`},
		{"two disk choices", "control-plane", func(n *NodeConfig) { n.Spec.EtcdClusters[0].Volume.PartitionLabel = "etcd-main" }, "spec.etcdClusters[0].volume", "set at most one of device, partitionLabel and serials"},
		{"partition label", "control-plane", func(n *NodeConfig) {
			clearDisks(n)
			n.Spec.EtcdClusters[0].Volume.PartitionLabel = "etcd/main"
		}, "spec.etcdClusters[0].volume.partitionLabel", "not a GPT partition name"},
		{"serial with a slash", "control-plane", func(n *NodeConfig) {
			clearDisks(n)
			n.Spec.EtcdClusters[0].Volume.Serials = []string{"ok", "a/b"}
		}, "spec.etcdClusters[0].volume.serials[1]", "not a disk serial number"},
		{"duplicate serial", "control-plane", func(n *NodeConfig) {
			clearDisks(n)
			n.Spec.EtcdClusters[0].Volume.Serials = []string{"S1", "S1"}
		}, "spec.etcdClusters[0].volume.serials[1]", `"S1" is already spec.etcdClusters[0].volume.serials[0]`},
		{"slot names", "control-plane", func(n *NodeConfig) {
			n.Spec.EtcdClusters[1].Name = "e2345678901234567890123456789012345678901234567890123456789012"
			n.Spec.EtcdClusters[1].PeerPort, n.Spec.EtcdClusters[1].ClientPort, n.Spec.EtcdClusters[1].ManagerPort = 12381, 14002, 13995
		}, "spec.etcdClusters[1].name", "member slot names"},
		{"volume on a worker", "nodes", func(n *NodeConfig) { n.Spec.Volume = &VolumeProviderSpec{Provider: VolumeProviderMetal} }, "spec.volume", "only control-plane nodes have etcd volumes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := loadExampleNode(t, tc.group)
			tc.edit(n)
			expectOnly(t, n.Validate(), tc.path, tc.msg)
		})
	}
}

func clearDisks(n *NodeConfig) {
	for i := range n.Spec.EtcdClusters {
		v := &n.Spec.EtcdClusters[i].Volume
		v.Device, v.PartitionLabel, v.Serials = "", "", nil
	}
}

// TestVolumeDefaults: control-plane nodes default to metal; workers get no
// volume block; a cluster's block gets the provider default.
func TestVolumeDefaults(t *testing.T) {
	cp := &NodeConfig{Spec: NodeConfigSpec{Role: RoleControlPlane}}
	cp.SetDefaults()
	if cp.Spec.Volume == nil || cp.Spec.Volume.Provider != VolumeProviderMetal {
		t.Errorf("control-plane volume %+v, want metal", cp.Spec.Volume)
	}
	w := &NodeConfig{Spec: NodeConfigSpec{Role: RoleNode}}
	w.SetDefaults()
	if w.Spec.Volume != nil {
		t.Errorf("worker volume %+v, want none", w.Spec.Volume)
	}
	c := &Cluster{Spec: ClusterSpec{Volume: &VolumeProviderSpec{}}}
	c.SetDefaults()
	if c.Spec.Volume.Provider != VolumeProviderMetal {
		t.Errorf("cluster volume %+v, want metal", c.Spec.Volume)
	}
}
