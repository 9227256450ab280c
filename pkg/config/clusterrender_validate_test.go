package config

import (
	"slices"
	"testing"
)

// The cluster fields `nodeup render` reads (assets, kubelet,
// instanceGroups) are validated with their field paths.
func TestValidateClusterRenderFields(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Cluster)
		path string
		msg  string
	}{
		{"mirror missing", func(c *Cluster) { c.Spec.Assets.Mirror = "" }, "spec.assets.mirror", "required"},
		{"mirror scheme", func(c *Cluster) { c.Spec.Assets.Mirror = "ftp://mirror.example.com" }, "spec.assets.mirror", "not an http or https URL"},
		{"mirror file", func(c *Cluster) { c.Spec.Assets.Mirror = "file:///srv/mirror" }, "spec.assets.mirror", "not an http or https URL"},
		{"mirror query", func(c *Cluster) { c.Spec.Assets.Mirror = "https://m.example.com/r?x=1" }, "spec.assets.mirror", "no query"},
		{"nodeup version", func(c *Cluster) { c.Spec.Assets.NodeupVersion = "../1.0" }, "spec.assets.nodeupVersion", "not a release version"},
		{"image name", func(c *Cluster) { c.Spec.Assets.AdditionalImages = []string{"Bad/Name"} }, "spec.assets.additionalImages[0]", "not an image tarball name"},
		{"image reserved", func(c *Cluster) { c.Spec.Assets.AdditionalImages = []string{"pause"} }, "spec.assets.additionalImages[0]", "already every node's"},
		{"image duplicate", func(c *Cluster) { c.Spec.Assets.AdditionalImages = []string{"a", "a"} }, "spec.assets.additionalImages[1]", "already listed"},
		{"max pods", func(c *Cluster) { c.Spec.Kubelet.MaxPods = 5000 }, "spec.kubelet.maxPods", "out of range"},
		{"cluster domain", func(c *Cluster) { c.Spec.Kubelet.ClusterDomain = "Bad_Domain" }, "spec.kubelet.clusterDomain", "not a valid DNS name"},
		{"resolv.conf", func(c *Cluster) { c.Spec.Kubelet.ResolvConf = "resolv.conf" }, "spec.kubelet.resolvConf", "absolute"},
		{"extra args", func(c *Cluster) { c.Spec.Kubelet.ExtraArgs = map[string]string{"--v": "2"} }, "spec.kubelet.extraArgs[\"--v\"]", "not a flag name"},
		{"group role", func(c *Cluster) { c.Spec.InstanceGroups[1].Role = "worker" }, "spec.instanceGroups[1].role", `"worker" is not a role`},
		{"group name", func(c *Cluster) { c.Spec.InstanceGroups[1].Name = "Nodes" }, "spec.instanceGroups[1].name", "not a valid instance group name"},
		{"group duplicate", func(c *Cluster) { c.Spec.InstanceGroups[1].Name = "control-plane" }, "spec.instanceGroups[1].name", "already the name of spec.instanceGroups[0]"},
		{"no control plane", func(c *Cluster) { c.Spec.InstanceGroups = c.Spec.InstanceGroups[1:] }, "spec.instanceGroups", "needs an instance group with role"},
		{"taint", func(c *Cluster) { c.Spec.InstanceGroups[1].Taints = []string{"x:Never"} }, "spec.instanceGroups[1].taints[0]", "effect"},
		{"label", func(c *Cluster) { c.Spec.InstanceGroups[1].NodeLabels = map[string]string{"a": "b c"} }, `spec.instanceGroups[1].nodeLabels["a"]`, "not a valid label value"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := loadExampleCluster(t)
			tc.edit(c)
			expectOnly(t, c.Validate(), tc.path, tc.msg)
		})
	}
}

// A cluster without instance groups gets a control-plane group (tainted)
// and a worker group; explicit taints are kept.
func TestDefaultInstanceGroups(t *testing.T) {
	c := NewCluster("d.k8s.local")
	want := []InstanceGroupSpec{
		{Name: "control-plane", Role: RoleControlPlane, Taints: []string{DefaultControlPlaneTaint}},
		{Name: "nodes", Role: RoleNode},
	}
	if len(c.Spec.InstanceGroups) != 2 || c.Spec.InstanceGroups[0].Name != want[0].Name || !slices.Equal(c.Spec.InstanceGroups[0].Taints, want[0].Taints) ||
		c.Spec.InstanceGroups[1].Name != want[1].Name || c.Spec.InstanceGroups[1].Taints != nil {
		t.Errorf("defaults %+v, want %+v", c.Spec.InstanceGroups, want)
	}
	c.Spec.InstanceGroups = []InstanceGroupSpec{{Name: "cp", Role: RoleControlPlane, Taints: []string{"a=b:PreferNoSchedule"}}}
	c.SetDefaults()
	if !slices.Equal(c.Spec.InstanceGroups[0].Taints, []string{"a=b:PreferNoSchedule"}) {
		t.Errorf("explicit taints replaced: %v", c.Spec.InstanceGroups[0].Taints)
	}
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
}
