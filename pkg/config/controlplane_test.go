package config

import (
	"slices"
	"testing"
)

func TestControlPlaneDefaults(t *testing.T) {
	n := &NodeConfig{Spec: NodeConfigSpec{ClusterName: "c1.k8s.local", Role: RoleControlPlane}}
	n.SetDefaults()
	cp := n.Spec.ControlPlane
	if cp == nil {
		t.Fatal("no controlPlane defaulted on a control-plane node")
	}
	if cp.APIServerName != "api.internal.c1.k8s.local" || cp.ServiceAccountIssuer != "https://api.internal.c1.k8s.local" || cp.NodeCIDRMaskSize != 24 {
		t.Errorf("defaults = %+v", cp)
	}
	// The default API name is the one worker kubelets dial by default.
	w := &NodeConfig{Spec: NodeConfigSpec{ClusterName: "c1.k8s.local", Role: RoleNode}}
	w.SetDefaults()
	if w.Spec.Kubelet.APIServer != "https://"+cp.APIServerName {
		t.Errorf("worker kubelet dials %s, control plane serves %s", w.Spec.Kubelet.APIServer, cp.APIServerName)
	}
	if w.Spec.ControlPlane != nil {
		t.Error("controlPlane defaulted on a worker")
	}
	// An explicit name carries into the issuer default.
	n = &NodeConfig{Spec: NodeConfigSpec{ClusterName: "c1.k8s.local", Role: RoleControlPlane, ControlPlane: &ControlPlaneSpec{APIServerName: "api.example.com"}}}
	n.SetDefaults()
	if n.Spec.ControlPlane.ServiceAccountIssuer != "https://api.example.com" {
		t.Errorf("issuer = %s", n.Spec.ControlPlane.ServiceAccountIssuer)
	}
}

func TestValidateControlPlane(t *testing.T) {
	cases := []struct {
		name  string
		group string
		edit  func(*NodeConfig)
		path  string
		msg   string
	}{
		{"on a worker", "nodes", func(n *NodeConfig) { n.Spec.ControlPlane = &ControlPlaneSpec{} }, "spec.controlPlane", "only control-plane nodes"},
		{"bad api name", "control-plane", func(n *NodeConfig) { n.Spec.ControlPlane.APIServerName = "API_1" }, "spec.controlPlane.apiServerName", "not a valid DNS name"},
		{"no api name", "control-plane", func(n *NodeConfig) { n.Spec.ControlPlane.APIServerName = "" }, "spec.controlPlane.apiServerName", "required"},
		{"http issuer", "control-plane", func(n *NodeConfig) { n.Spec.ControlPlane.ServiceAccountIssuer = "http://x" }, "spec.controlPlane.serviceAccountIssuer", "not an https URL"},
		{"mask wider than pod range", "control-plane", func(n *NodeConfig) { n.Spec.ControlPlane.NodeCIDRMaskSize = 8 }, "spec.controlPlane.nodeCIDRMaskSize", "at least networking.podCIDR's /11"},
		{"mask too long", "control-plane", func(n *NodeConfig) { n.Spec.ControlPlane.NodeCIDRMaskSize = 31 }, "spec.controlPlane.nodeCIDRMaskSize", "at most 30"},
		{"extra arg with dashes", "control-plane", func(n *NodeConfig) {
			n.Spec.ControlPlane.APIServer.ExtraArgs = map[string]string{"--v": "2"}
		}, `spec.controlPlane.apiServer.extraArgs["--v"]`, "without the leading --"},
		{"extra arg value with newline", "control-plane", func(n *NodeConfig) {
			n.Spec.ControlPlane.ControllerManager.ExtraArgs = map[string]string{"v": "2\n"}
		}, `spec.controlPlane.controllerManager.extraArgs["v"]`, "line break"},
		{"scheduler extra arg", "control-plane", func(n *NodeConfig) {
			n.Spec.ControlPlane.Scheduler.ExtraArgs = map[string]string{"Bad": "1"}
		}, `spec.controlPlane.scheduler.extraArgs["Bad"]`, "not a flag name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := loadExampleNode(t, c.group)
			c.edit(n)
			expectOnly(t, n.Validate(), c.path, c.msg)
		})
	}
}

func TestControlPlaneAssets(t *testing.T) {
	s := NodeConfigSpec{EtcdClusters: []EtcdClusterSpec{{Name: "main", Version: "3.6.16"}, {Name: "events", Version: "3.6.16"}, {Name: "x", Version: "3.5.21"}}}
	want := []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "etcd-3.6.16", "etcdutl-3.6.16", "etcd-3.5.21", "etcdutl-3.5.21"}
	if got := s.ControlPlaneAssets(); !slices.Equal(got, want) {
		t.Errorf("ControlPlaneAssets = %v, want %v", got, want)
	}
}

func TestValidateEtcdVersion(t *testing.T) {
	for v, ok := range map[string]bool{"3.6.16": true, "3.5.21": true, "3.7.3": true, "3.4.23": false, "3.6": false, "v3.6.16": false, "": false, "4.0.0": false} {
		if err := ValidateEtcdVersion(v); (err == nil) != ok {
			t.Errorf("ValidateEtcdVersion(%q) = %v, want ok %t", v, err, ok)
		}
	}
}
