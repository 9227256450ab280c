package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kopsnode/agents/nodeup/app"
	"github.com/kopsnode/agents/pkg/releases/releasestest"
	"github.com/kopsnode/agents/pkg/store/storeurl"
	"github.com/kopsnode/agents/pkg/testtools"
)

// e2eKopsnodeVersion is the kopsnode release the test mirror serves: this
// tree's nodeup, protokube and etcd-manager.
const e2eKopsnodeVersion = "e2e"

// renderedCluster is what `nodeup render` gave the operator: each instance
// group's userdata and the hash of its stored node configuration.
type renderedCluster struct {
	Userdata map[string][]byte
	Hashes   map[string]string
}

// clusterSpec is the cluster the booted-machine tests run, as an operator
// writes it: the version table's Kubernetes release from the test mirror,
// and the settings these machines need.
func (c *clusterFixture) clusterSpec(controlPlanes int) string {
	return fmt.Sprintf(`apiVersion: agents.kopsnode.io/v1alpha1
kind: Cluster
metadata:
  name: %s
spec:
  kubernetesVersion: %s
  networking:
    mode: kubenet
    podCIDR: 100.96.0.0/11
    serviceCIDR: 100.64.0.0/13
  containerRuntime:
    # Machines in systemd-nspawn lack CAP_SYS_RESOURCE.
    restrictOOMScoreAdj: true
  kubelet:
    # The test machines share the host's cgroup v1 hierarchy.
    failCgroupV1: false
    # ... and the host's disk: the kubelet's percentage defaults would
    # evict pods whenever the host's disk is more than 85%% full.
    evictionHard:
      memory.available: 100Mi
      nodefs.available: 1Gi
      nodefs.inodesFree: 5%%
      imagefs.available: 1Gi
      imagefs.inodesFree: 5%%
  assets:
    mirror: %s/releases
    nodeupVersion: %s
    additionalImages: [testapp]
  etcdClusters:
    - {name: main, members: %d, version: %s, volume: {device: %s}}
    - {name: events, members: %d, version: %s, volume: {device: %s}}
  gossip:
    seeds: store
`, clusterName, testtools.KubernetesVersion, c.mirror.URL, e2eKopsnodeVersion,
		controlPlanes, e2eEtcdVersion, etcdDevice("main"), controlPlanes, e2eEtcdVersion, etcdDevice("events"))
}

// renderCluster writes the cluster into the store as an operator does,
// with `nodeup render` (app.RenderCluster, the command's own code) from a
// cluster spec, over a release mirror laid out from the parts make tools
// built: every node configuration, CA, token, keyring and etcd spec the
// machines use comes from it.
func (c *clusterFixture) renderCluster(controlPlanes int) renderedCluster {
	t := c.t
	t.Helper()
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("reading part: %v", err)
		}
		return b
	}
	bins := map[string][]byte{"nodeup": c.nodeup,
		"protokube":    read(buildBinary(t, "protokube/cmd/protokube")),
		"etcd-manager": read(buildBinary(t, "etcd-manager/cmd/etcd-manager"))}
	for p, b := range releasestest.Contents(t, e2eKopsnodeVersion, bins, "testapp") {
		c.mirror.set("releases/"+p, b)
	}
	cf := filepath.Join(t.TempDir(), "cluster.yaml")
	if err := os.WriteFile(cf, []byte(c.clusterSpec(controlPlanes)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(storeurl.EnvS3AccessKey, c.minio.AccessKey)
	t.Setenv(storeurl.EnvS3SecretKey, c.minio.SecretKey)
	out, err := app.RenderCluster(context.Background(), app.RenderOptions{ClusterFile: cf,
		Store: storeurl.Settings{URL: c.storeURL(), Endpoint: c.minio.Endpoint, Region: c.minio.Region, PathStyle: true}})
	if err != nil {
		t.Fatalf("nodeup render: %v", err)
	}
	t.Logf("nodeup render: %d store objects written", out.Changed())
	rc := renderedCluster{Userdata: map[string][]byte{}, Hashes: map[string]string{}}
	for g, s := range out.Userdata {
		rc.Userdata[g] = []byte(s)
	}
	for _, g := range out.Groups {
		rc.Hashes[g.Name] = g.ConfigHash
	}
	for _, g := range []string{"control-plane", "nodes"} {
		if rc.Userdata[g] == nil || rc.Hashes[g] == "" {
			t.Fatalf("nodeup render gave no userdata or configuration for group %s: %+v", g, out.Groups)
		}
	}
	return rc
}
