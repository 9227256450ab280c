package config

import (
	"reflect"
	"testing"
)

func TestSetDefaultsNodeConfig(t *testing.T) {
	n, err := DecodeNodeConfig([]byte(minimalNode+"  gossip: {}\n  etcdClusters:\n    - {name: main}\n    - {name: events}\n    - {name: cilium}\n"), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	SetDefaults(n)
	s := n.Spec
	tr := true
	checks := []struct {
		field     string
		got, want any
	}{
		{"containerRuntime.name", s.ContainerRuntime.Name, "containerd"},
		{"containerRuntime.sandboxImage", s.ContainerRuntime.SandboxImage, DefaultSandboxImage},
		{"containerRuntime.systemdCgroup", s.ContainerRuntime.SystemdCgroup, &tr},
		{"kubelet.apiServer", s.Kubelet.APIServer, "https://api.internal.example.k8s.local"},
		{"kubelet.clusterDomain", s.Kubelet.ClusterDomain, "cluster.local"},
		{"kubelet.maxPods", s.Kubelet.MaxPods, 110},
		{"kubelet.clusterDNS", s.Kubelet.ClusterDNS, "100.64.0.10"},
		{"networking.mode", s.Networking.Mode, "kubenet"},
		{"networking.podCIDR", s.Networking.PodCIDR, "100.96.0.0/11"},
		{"networking.serviceCIDR", s.Networking.ServiceCIDR, "100.64.0.0/13"},
		{"networking.nonMasqueradeCIDR", s.Networking.NonMasqueradeCIDR, "100.64.0.0/10"},
		{"networking.mtu", s.Networking.MTU, 0},
		{"gossip.port", s.Gossip.Port, 3996},
		{"gossip.seeds", s.Gossip.Seeds, "store"},
		{"gossip.dnsListen", s.Gossip.DNSListen, DefaultDNSListen},
		{"etcdClusters[0] ports", [3]int{s.EtcdClusters[0].PeerPort, s.EtcdClusters[0].ClientPort, s.EtcdClusters[0].ManagerPort}, [3]int{2380, 4001, 3994}},
		{"etcdClusters[1] ports", [3]int{s.EtcdClusters[1].PeerPort, s.EtcdClusters[1].ClientPort, s.EtcdClusters[1].ManagerPort}, [3]int{2381, 4002, 3995}},
		{"etcdClusters[2] ports (no defaults)", [3]int{s.EtcdClusters[2].PeerPort, s.EtcdClusters[2].ClientPort, s.EtcdClusters[2].ManagerPort}, [3]int{0, 0, 0}},
		{"etcdClusters[0].backups", s.EtcdClusters[0].Backups, BackupSpec{Interval: "15m"}},
		{"etcdClusters[0].volume", s.EtcdClusters[0].Volume, VolumeSpec{SizeGiB: 20}},
		{"etcdClusters[0].members (required, not defaulted)", s.EtcdClusters[0].Members, 0},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.field, c.got, c.want)
		}
	}
}

func TestSetDefaultsControlPlaneAPIServer(t *testing.T) {
	n := &NodeConfig{Spec: NodeConfigSpec{ClusterName: "a.example.com", Role: RoleControlPlane}}
	SetDefaults(n)
	if n.Spec.Kubelet.APIServer != "https://127.0.0.1" {
		t.Errorf("apiServer %q, want https://127.0.0.1", n.Spec.Kubelet.APIServer)
	}
}

func TestSetDefaultsCluster(t *testing.T) {
	c := &Cluster{Metadata: ObjectMeta{Name: "example.k8s.local"}}
	SetDefaults(c)
	if c.Spec.Gossip != nil {
		t.Errorf("gossip turned on by default: %+v", c.Spec.Gossip)
	}
	if c.Spec.ContainerRuntime.Name != "containerd" || c.Spec.Networking.Mode != "kubenet" {
		t.Errorf("runtime/networking not defaulted: %+v %+v", c.Spec.ContainerRuntime, c.Spec.Networking)
	}
}

func TestSetDefaultsKeepsExplicitValues(t *testing.T) {
	f := false
	n := &NodeConfig{Spec: NodeConfigSpec{
		Role:             RoleNode,
		ContainerRuntime: ContainerRuntimeSpec{Name: "docker", SystemdCgroup: &f},
		Kubelet:          KubeletSpec{MaxPods: 30, ClusterDomain: "k8s.example", ClusterDNS: "169.254.20.10", APIServer: "https://10.0.0.1"},
		Networking:       NetworkingSpec{Mode: "cni", Provider: "cilium", PodCIDR: "10.0.0.0/16", ServiceCIDR: "10.1.0.0/16", NonMasqueradeCIDR: "10.0.0.0/8"},
		EtcdClusters:     []EtcdClusterSpec{{Name: "main", PeerPort: 1, ClientPort: 2, ManagerPort: 3, Volume: VolumeSpec{SizeGiB: 5}, Backups: BackupSpec{Interval: "1h"}}},
		Gossip:           &GossipSpec{Port: 7946, Seeds: "static", DNSListen: "127.0.0.9:5353"},
	}}
	want := &NodeConfig{}
	if err := deepCopy(n, want); err != nil {
		t.Fatal(err)
	}
	want.Spec.ContainerRuntime.SandboxImage = DefaultSandboxImage // the one field left unset
	SetDefaults(n)
	if !reflect.DeepEqual(n, want) {
		t.Errorf("explicit values changed:\n got %+v\nwant %+v", n.Spec, want.Spec)
	}
}

func TestSetDefaultsIdempotent(t *testing.T) {
	for _, path := range exampleFiles(t) {
		data, err := ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := Decode(data, path)
		if err != nil {
			t.Fatal(err)
		}
		SetDefaults(doc)
		once, _ := Marshal(doc)
		SetDefaults(doc)
		twice, _ := Marshal(doc)
		if string(once) != string(twice) {
			t.Errorf("%s: second SetDefaults changed the document:\n%s\n%s", path, once, twice)
		}
	}
}
