package config

import (
	"reflect"
	"testing"
)

func TestNewClusterAndNodeConfigAreValid(t *testing.T) {
	c := NewCluster("demo.k8s.local")
	if err := c.Validate(); err != nil {
		t.Fatalf("NewCluster: %v", err)
	}
	before, _ := Marshal(c)
	for _, role := range []Role{RoleControlPlane, RoleNode} {
		n := NewNodeConfig(c, string(role)+"s", role)
		if err := n.Validate(); err != nil {
			t.Fatalf("NewNodeConfig(%s): %v", role, err)
		}
		if (len(n.Spec.EtcdClusters) > 0) != (role == RoleControlPlane) {
			t.Errorf("%s: etcdClusters %v", role, n.Spec.EtcdClusters)
		}
		out, err := Marshal(n)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseNodeConfig(out, "generated.yaml")
		if err != nil {
			t.Fatalf("generated %s config does not parse:\n%s\n%v", role, out, err)
		}
		if !reflect.DeepEqual(back, n) {
			t.Errorf("%s: printed config parses to a different value", role)
		}
		// The generated document shares nothing with the cluster spec.
		if n.Spec.Gossip == c.Spec.Gossip {
			t.Errorf("%s: gossip spec shared with the cluster", role)
		}
	}
	if after, _ := Marshal(c); string(after) != string(before) {
		t.Errorf("NewNodeConfig modified the cluster:\n%s\n%s", before, after)
	}
	n := NewNodeConfig(c, "nodes", RoleNode)
	if n.Spec.Kubelet.APIServer != "https://api.internal.demo.k8s.local" {
		t.Errorf("apiServer %q", n.Spec.Kubelet.APIServer)
	}
}

// TestNewNodeConfigCarriesVolumeProvider: control-plane node
// configurations get the cluster's volume provider and each etcd
// cluster's disk choice; worker configurations get neither.
func TestNewNodeConfigCarriesVolumeProvider(t *testing.T) {
	c := NewCluster("demo.k8s.local")
	c.Spec.Volume = &VolumeProviderSpec{Provider: VolumeProviderMetal, Metal: &MetalVolumeSpec{Scan: []string{"/dev/vd*"}}}
	c.Spec.EtcdClusters[0].Volume.Serials = []string{"SERIAL-1"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	cp := NewNodeConfig(c, "control-plane", RoleControlPlane)
	if cp.Spec.Volume == nil || cp.Spec.Volume.Provider != VolumeProviderMetal || !reflect.DeepEqual(cp.Spec.Volume.Metal.Scan, []string{"/dev/vd*"}) ||
		!reflect.DeepEqual(cp.Spec.EtcdClusters[0].Volume.Serials, []string{"SERIAL-1"}) {
		t.Fatalf("control-plane volume %+v, etcd volume %+v", cp.Spec.Volume, cp.Spec.EtcdClusters[0].Volume)
	}
	if cp.Spec.Volume == c.Spec.Volume {
		t.Error("volume spec shared with the cluster")
	}
	if err := cp.Validate(); err != nil {
		t.Fatal(err)
	}
	if n := NewNodeConfig(c, "nodes", RoleNode); n.Spec.Volume != nil {
		t.Errorf("worker volume %+v, want none", n.Spec.Volume)
	}
	// A cluster without a volume block: control planes default to metal.
	c.Spec.Volume = nil
	if cp := NewNodeConfig(c, "control-plane", RoleControlPlane); cp.Spec.Volume == nil || cp.Spec.Volume.Provider != VolumeProviderMetal {
		t.Errorf("default volume %+v, want metal", cp.Spec.Volume)
	}
}
