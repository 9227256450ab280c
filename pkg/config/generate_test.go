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
