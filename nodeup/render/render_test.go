package render

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/bootstraptoken"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/pki"
	"github.com/kopsnode/agents/pkg/releases"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/file"
	s3store "github.com/kopsnode/agents/pkg/store/s3"
	"github.com/kopsnode/agents/pkg/testtools"
	"github.com/kopsnode/agents/protokube/gossipkeys"
)

const (
	testCluster  = "render.k8s.local"
	testKopsnode = "1.0.0-test"
)

// testTable is the real table plus an older release, so that a test can
// change the Kubernetes version.
func testTable() []releases.Release {
	t := releases.Table()
	old := t[0]
	old.Kubernetes, old.Containerd, old.Etcd = "1.36.9", "2.3.1", []string{"3.6.16"}
	return append([]releases.Release{old}, t...)
}

// mirror is a release mirror on an httptest server, laid out by
// releases.WriteMirror from stand-in parts.
type mirror struct {
	URL, Dir string
}

func newMirror(t *testing.T, table []releases.Release) *mirror {
	t.Helper()
	dir := t.TempDir()
	source := func(p releases.Part) ([]byte, error) { return []byte("stand-in for " + p.String() + "\n"), nil }
	for _, r := range table {
		files, err := releases.MirrorLayout(r, testKopsnode)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, releases.ImageFile(releases.Image{Name: "testapp"}))
		if err := releases.WriteMirror(dir, files, source); err != nil {
			t.Fatal(err)
		}
	}
	// A base URL with a path, as a real mirror's often has.
	srv := httptest.NewServer(http.StripPrefix("/releases", http.FileServer(http.Dir(dir))))
	t.Cleanup(srv.Close)
	return &mirror{URL: srv.URL + "/releases", Dir: dir}
}

func (m *mirror) fileSHA(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(m.Dir, rel))
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

type clusterOpts struct {
	kubernetes, etcdMain, extra string
}

func clusterYAML(mirrorURL string, o clusterOpts) []byte {
	if o.kubernetes == "" {
		o.kubernetes = "1.37.2"
	}
	if o.etcdMain == "" {
		o.etcdMain = "3.6.16"
	}
	return []byte(fmt.Sprintf(`apiVersion: agents.kopsnode.io/v1alpha1
kind: Cluster
metadata:
  name: %s
spec:
  kubernetesVersion: %s
  networking:
    mode: kubenet
  containerRuntime:
    restrictOOMScoreAdj: true
  assets:
    mirror: %s
    additionalImages: [testapp]
  kubelet:
    failCgroupV1: false
  etcdClusters:
    - name: main
      members: 1
      version: %s
      volume:
        device: /dev/etcd-main
    - name: events
      members: 1
      version: 3.6.16
      volume:
        device: /dev/etcd-events
  gossip: {}
%s`, testCluster, o.kubernetes, mirrorURL, o.etcdMain, o.extra))
}

func run(t *testing.T, st store.Store, data []byte, dryRun bool) (*Result, *Plan, error) {
	t.Helper()
	return Run(context.Background(), Options{ClusterData: data, Source: "cluster.yaml", Store: st, DryRun: dryRun,
		Table: testTable(), KopsnodeVersion: testKopsnode})
}

func mustRun(t *testing.T, st store.Store, data []byte, dryRun bool) *Result {
	t.Helper()
	res, _, err := run(t, st, data, dryRun)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// versions lists every object of the store with its version.
func versions(t *testing.T, st store.Store) map[string]store.Version {
	t.Helper()
	infos, err := st.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]store.Version{}
	for _, i := range infos {
		out[i.Key] = i.Version
	}
	return out
}

func changed(before, after map[string]store.Version) []string {
	var keys []string
	for k, v := range after {
		if before[k] != v {
			keys = append(keys, k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			keys = append(keys, k+" (deleted)")
		}
	}
	slices.Sort(keys)
	return keys
}

func fileStore(t *testing.T) store.Store {
	t.Helper()
	st, err := file.New(t.TempDir(), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestRenderFileStore(t *testing.T) {
	testRenderLifecycle(t, fileStore(t))
}

// The same against a real S3 server.
func TestRenderMinIO(t *testing.T) {
	m := testtools.StartMinIO(t, testtools.MinIOOptions{})
	m.CreateBucket(t, "state", false)
	st, err := s3store.New(context.Background(), s3store.Options{Bucket: "state", Prefix: "clusters", Endpoint: m.Endpoint, Region: m.Region,
		PathStyle: true, AccessKey: m.AccessKey, SecretKey: m.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	testRenderLifecycle(t, st)
}

func testRenderLifecycle(t *testing.T, st store.Store) {
	ctx := context.Background()
	m := newMirror(t, testTable())
	data := clusterYAML(m.URL, clusterOpts{})

	// A dry run on an empty store writes nothing and shows everything.
	res := mustRun(t, st, data, true)
	if got := versions(t, st); len(got) != 0 {
		t.Fatalf("dry run wrote %v", got)
	}
	var human bytes.Buffer
	if err := res.Human(&human); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"would create CA kubernetes-ca", "would create CA etcd-peers-ca-main", "would create signing key service-account",
		"would create bootstrap token", "would create gossip keyring", "would create etcd cluster spec main",
		"would create node configuration control-plane", "+kind: NodeConfig", `+  "etcdVersion": "3.6.16"`} {
		if !strings.Contains(human.String(), want) {
			t.Errorf("dry run output lacks %q:\n%s", want, human.String())
		}
	}

	// The first run writes everything.
	res = mustRun(t, st, data, false)
	if res.Changed() != len(res.Changes) {
		t.Errorf("first run: %d of %d changed", res.Changed(), len(res.Changes))
	}
	checkStore(t, st, m, res)
	first := versions(t, st)

	// A second run writes nothing.
	res = mustRun(t, st, data, false)
	if res.Changed() != 0 {
		t.Errorf("second run changed %+v", res.Changes)
	}
	if c := changed(first, versions(t, st)); len(c) != 0 {
		t.Errorf("second run wrote %v", c)
	}

	// An etcd upgrade of main: its spec and the control-plane configuration.
	upgraded := clusterYAML(m.URL, clusterOpts{etcdMain: "3.7.3"})
	dry := mustRun(t, st, upgraded, true)
	if c := changed(first, versions(t, st)); len(c) != 0 {
		t.Errorf("dry run wrote %v", c)
	}
	human.Reset()
	dry.Human(&human)
	for _, want := range []string{`-  "etcdVersion": "3.6.16"`, `+  "etcdVersion": "3.7.3"`, "+    - name: etcd-3.7.3", "would update node configuration control-plane"} {
		if !strings.Contains(human.String(), want) {
			t.Errorf("dry run of the upgrade lacks %q:\n%s", want, human.String())
		}
	}
	mustRun(t, st, upgraded, false)
	second := versions(t, st)
	want := []string{testCluster + "/backups/etcd/main/control/etcd-cluster-spec", testCluster + "/nodeup/control-plane.yaml"}
	if c := changed(first, second); !slices.Equal(c, want) {
		t.Errorf("etcd upgrade changed %v, want %v", c, want)
	}
	if s, err := control.ReadSpec(ctx, st, control.Layout{Cluster: testCluster, EtcdCluster: "main"}); err != nil || s.EtcdVersion != "3.7.3" {
		t.Errorf("main spec after the upgrade: %+v %v", s, err)
	}

	// A Kubernetes version change: both node configurations, nothing else.
	older := clusterYAML(m.URL, clusterOpts{kubernetes: "1.36.9", etcdMain: "3.7.3"})
	if _, _, err := run(t, st, older, false); err == nil || !strings.Contains(err.Error(), "spec.etcdClusters[0].version") {
		t.Fatalf("etcd 3.7.3 with a release that does not allow it: %v", err)
	}
	older = clusterYAML(m.URL, clusterOpts{kubernetes: "1.36.9"})
	res = mustRun(t, st, older, false)
	want = []string{testCluster + "/backups/etcd/main/control/etcd-cluster-spec", testCluster + "/nodeup/control-plane.yaml", testCluster + "/nodeup/nodes.yaml"}
	if c := changed(second, versions(t, st)); !slices.Equal(c, want) {
		t.Errorf("Kubernetes version change changed %v, want %v", c, want)
	}
	n := readNodeConfig(t, st, "nodes")
	if n.Spec.KubernetesVersion != "1.36.9" || n.Spec.ContainerRuntime.Version != "2.3.1" {
		t.Errorf("nodes after the version change: kubernetes %s containerd %s", n.Spec.KubernetesVersion, n.Spec.ContainerRuntime.Version)
	}
	if a := asset(n, "kubelet"); a == nil || !strings.HasSuffix(a.URLs[0], "/kubernetes/v1.36.9/bin/linux/amd64/kubelet") {
		t.Errorf("kubelet asset after the version change: %+v", a)
	}
}

func readNodeConfig(t *testing.T, st store.Store, group string) *config.NodeConfig {
	t.Helper()
	b, _, err := store.ReadAll(context.Background(), st, config.NodeConfigKey(testCluster, group))
	if err != nil {
		t.Fatal(err)
	}
	n, err := config.ParseNodeConfig(b, group)
	if err != nil {
		t.Fatalf("rendered node configuration %s does not parse: %v\n%s", group, err, b)
	}
	return n
}

func asset(n *config.NodeConfig, name string) *config.Asset {
	for i := range n.Spec.Assets {
		if n.Spec.Assets[i].Name == name {
			return &n.Spec.Assets[i]
		}
	}
	return nil
}

// checkStore checks what a first run wrote: the node configurations (as the
// e2e test's hand-written ones: roles, API server URLs, taints, assets by
// role with the mirror's hashes), the hashes the result reports, the
// secrets and the etcd specs.
func checkStore(t *testing.T, st store.Store, m *mirror, res *Result) {
	t.Helper()
	ctx := context.Background()
	cp, nodes := readNodeConfig(t, st, "control-plane"), readNodeConfig(t, st, "nodes")
	if cp.Spec.Role != config.RoleControlPlane || nodes.Spec.Role != config.RoleNode {
		t.Errorf("roles %s, %s", cp.Spec.Role, nodes.Spec.Role)
	}
	if cp.Spec.Kubelet.APIServer != "https://127.0.0.1" || nodes.Spec.Kubelet.APIServer != "https://"+config.DefaultAPIServerName(testCluster) {
		t.Errorf("API servers: control plane %s, nodes %s", cp.Spec.Kubelet.APIServer, nodes.Spec.Kubelet.APIServer)
	}
	if !slices.Equal(cp.Spec.Kubelet.Taints, []string{config.DefaultControlPlaneTaint}) || len(nodes.Spec.Kubelet.Taints) != 0 {
		t.Errorf("taints: control plane %v, nodes %v", cp.Spec.Kubelet.Taints, nodes.Spec.Kubelet.Taints)
	}
	for _, n := range []*config.NodeConfig{cp, nodes} {
		s := n.Spec
		if s.Kubelet.FailCgroupV1 == nil || *s.Kubelet.FailCgroupV1 || !s.ContainerRuntime.RestrictOOMScoreAdj ||
			s.ContainerRuntime.Version != "2.4.2" || s.ContainerRuntime.SandboxImage != "registry.k8s.io/pause:3.10.1" || s.Gossip == nil {
			t.Errorf("%s: cluster settings not carried: kubelet %+v runtime %+v", n.Metadata.Name, s.Kubelet, s.ContainerRuntime)
		}
		for _, a := range s.Assets {
			rel := strings.TrimPrefix(a.URLs[0], m.URL+"/")
			if got := m.fileSHA(t, rel); got != a.SHA256 {
				t.Errorf("%s: asset %s pinned %s, the file's hash is %s", n.Metadata.Name, a.Name, a.SHA256, got)
			}
		}
	}
	for _, name := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "etcd-manager", "etcd-3.6.16", "etcdutl-3.6.16"} {
		if asset(nodes, name) != nil {
			t.Errorf("the worker configuration has control-plane asset %s", name)
		}
		if asset(cp, name) == nil {
			t.Errorf("the control-plane configuration lacks %s", name)
		}
	}
	for _, name := range []string{"kubelet", "kube-proxy", "containerd", "runc", "cni-plugins", "protokube", "image-pause", "image-coredns", "image-testapp"} {
		if asset(nodes, name) == nil || asset(cp, name) == nil {
			t.Errorf("asset %s missing from a configuration", name)
		}
	}
	if len(cp.Spec.EtcdClusters) != 2 || cp.Spec.EtcdClusters[0].Volume.Device != "/dev/etcd-main" || len(nodes.Spec.EtcdClusters) != 0 {
		t.Errorf("etcd clusters: control plane %+v, nodes %+v", cp.Spec.EtcdClusters, nodes.Spec.EtcdClusters)
	}
	for _, g := range res.Groups {
		b, _, err := store.ReadAll(ctx, st, config.NodeConfigKey(testCluster, g.Name))
		if err != nil || config.FileHash(b) != g.ConfigHash {
			t.Errorf("group %s: reported hash %s, stored %s (%v)", g.Name, g.ConfigHash, config.FileHash(b), err)
		}
	}
	if res.Nodeup.SHA256 != m.fileSHA(t, "kopsnode/"+testKopsnode+"/nodeup") || res.Nodeup.URL != m.URL+"/kopsnode/"+testKopsnode+"/nodeup" {
		t.Errorf("nodeup %+v", res.Nodeup)
	}
	ks, err := pki.NewKeystore(st, testCluster+"/pki", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ca := range []string{pki.CAKubernetes, pki.CAFrontProxy, pki.CAEtcdClients, pki.CAEtcdPeers("main"), pki.CAEtcdManager("events")} {
		if _, err := ks.LoadCACert(ctx, ca); err != nil {
			t.Errorf("CA %s: %v", ca, err)
		}
	}
	if _, err := ks.LoadSigningKey(ctx, pki.SigningKeyServiceAccount); err != nil {
		t.Error(err)
	}
	if _, err := bootstraptoken.Read(ctx, st, testCluster); err != nil {
		t.Error(err)
	}
	if _, err := gossipkeys.ForCluster(st, testCluster).Show(ctx); err != nil {
		t.Error(err)
	}
	for _, e := range []string{"main", "events"} {
		s, err := control.ReadSpec(ctx, st, control.Layout{Cluster: testCluster, EtcdCluster: e})
		if err != nil || s != (control.Spec{MemberCount: 1, EtcdVersion: "3.6.16"}) {
			t.Errorf("etcd spec %s: %+v %v", e, s, err)
		}
	}
}

// Bad input: each error names what and where, and nothing is written.
func TestRenderErrors(t *testing.T) {
	m := newMirror(t, testTable())
	good := string(clusterYAML(m.URL, clusterOpts{}))
	pinned := testTable()
	kubeletPath := "kubernetes/v1.37.2/bin/linux/amd64/kubelet"
	pinned[1].SHA256 = map[string]string{kubeletPath: strings.Repeat("0", 64)}
	actual := m.fileSHA(t, kubeletPath)

	for _, c := range []struct {
		name  string
		data  string
		table []releases.Release
		setup func()
		want  []string
	}{
		{name: "unknown Kubernetes version", data: strings.Replace(good, "kubernetesVersion: 1.37.2", "kubernetesVersion: 1.35.0", 1),
			want: []string{"cluster.yaml: spec.kubernetesVersion:", `"1.35.0"`, "supported: 1.36.9, 1.37.2"}},
		{name: "hash differs from the table", table: pinned,
			want: []string{"asset kubelet", m.URL + "/" + kubeletPath, actual, strings.Repeat("0", 64)}},
		{name: "invalid cluster.yaml", data: strings.Replace(good, "  etcdClusters:", "  instanceGroups:\n    - name: cp\n      role: master\n  etcdClusters:", 1),
			want: []string{"cluster.yaml:", "spec.instanceGroups[0].role", `"master" is not a role`}},
		{name: "no mirror", data: strings.Replace(good, "    mirror: "+m.URL+"\n", "", 1),
			want: []string{"cluster.yaml:", "spec.assets.mirror", "required"}},
		{name: "containerd version against the table", data: strings.Replace(good, "restrictOOMScoreAdj: true", "restrictOOMScoreAdj: true\n    version: 2.3.0", 1),
			want: []string{"cluster.yaml: spec.containerRuntime.version:", `"2.3.0"`, "2.4.2"}},
		{name: "docker", data: strings.Replace(good, "restrictOOMScoreAdj: true", "restrictOOMScoreAdj: true\n    name: docker", 1),
			want: []string{"cluster.yaml:", "spec.containerRuntime.name", "docker"}},
		{name: "missing .sha256", setup: func() {
			if err := os.Remove(filepath.Join(m.Dir, "runc/v1.4.4/runc.amd64.sha256")); err != nil {
				t.Fatal(err)
			}
		}, want: []string{"asset runc", m.URL + "/runc/v1.4.4/runc.amd64.sha256", "404"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := fileStore(t)
			data := c.data
			if data == "" {
				data = good
			}
			table := c.table
			if table == nil {
				table = testTable()
			}
			if c.setup != nil {
				c.setup()
			}
			_, _, err := Run(context.Background(), Options{ClusterData: []byte(data), Source: "cluster.yaml", Store: st, Table: table, KopsnodeVersion: testKopsnode})
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if v := versions(t, st); len(v) != 0 {
				t.Errorf("wrote %v", slices.Sorted(maps.Keys(v)))
			}
		})
	}
}

// Instance groups of the cluster spec: names, roles, taints and labels
// reach the node configurations.
func TestBuildPlanInstanceGroups(t *testing.T) {
	m := newMirror(t, testTable())
	data := clusterYAML(m.URL, clusterOpts{extra: `  instanceGroups:
    - name: masters
      role: control-plane
    - name: gpu
      role: node
      taints: ["gpu=true:NoSchedule"]
      nodeLabels: {accelerator: gpu}
    - name: open-cp
      role: control-plane
      taints: ["node-role.kubernetes.io/control-plane:PreferNoSchedule"]
`})
	_, p, err := run(t, fileStore(t), data, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Groups) != 3 {
		t.Fatalf("%d groups", len(p.Groups))
	}
	g := map[string]*config.NodeConfig{}
	for _, grp := range p.Groups {
		g[grp.Name] = grp.Config
	}
	if !slices.Equal(g["masters"].Spec.Kubelet.Taints, []string{config.DefaultControlPlaneTaint}) || !slices.Equal(g["open-cp"].Spec.Kubelet.Taints, []string{"node-role.kubernetes.io/control-plane:PreferNoSchedule"}) {
		t.Errorf("control-plane taints: %v, %v", g["masters"].Spec.Kubelet.Taints, g["open-cp"].Spec.Kubelet.Taints)
	}
	if gpu := g["gpu"].Spec.Kubelet; !slices.Equal(gpu.Taints, []string{"gpu=true:NoSchedule"}) || gpu.NodeLabels["accelerator"] != "gpu" {
		t.Errorf("gpu kubelet %+v", gpu)
	}
}

// examples/cluster.yaml renders: its versions are in the table and every
// node configuration it yields passes nodeup's validation.
func TestExampleClusterRenders(t *testing.T) {
	path := filepath.Join("..", "..", "examples", "cluster.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, in, err := Prepare(data, path, releases.Table(), "dev")
	if err != nil {
		t.Fatal(err)
	}
	in.SHA256 = map[string]string{}
	for _, f := range append(in.Files, releases.NodeupFile(in.KopsnodeVersion)) {
		in.SHA256[f.Path] = strings.Repeat("1", 64)
	}
	p, err := BuildPlan(c, in)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Groups) != 2 || len(p.EtcdSpecs) != 2 || !strings.HasPrefix(p.Nodeup.URL, "https://mirror.example.com/kopsnode-releases/kopsnode/dev/") {
		t.Errorf("plan of the example: %d groups, %d etcd specs, nodeup %s", len(p.Groups), len(p.EtcdSpecs), p.Nodeup.URL)
	}
}

// Every cluster-wide kubelet setting reaches every node configuration.
func TestClusterKubeletReachesNodes(t *testing.T) {
	m := newMirror(t, testTable())
	data := strings.Replace(string(clusterYAML(m.URL, clusterOpts{})), "    failCgroupV1: false\n",
		"    failCgroupV1: false\n    maxPods: 64\n    clusterDomain: corp.local\n    resolvConf: /run/systemd/resolve/resolv.conf\n    extraArgs: {v: \"4\"}\n    evictionHard: {nodefs.available: 1Gi}\n", 1)
	_, p, err := run(t, fileStore(t), []byte(data), true)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range p.Groups {
		k := g.Config.Spec.Kubelet
		if k.FailCgroupV1 == nil || *k.FailCgroupV1 || k.MaxPods != 64 || k.ClusterDomain != "corp.local" ||
			k.ResolvConf != "/run/systemd/resolve/resolv.conf" || k.ExtraArgs["v"] != "4" || k.EvictionHard["nodefs.available"] != "1Gi" {
			t.Errorf("group %s: kubelet %+v", g.Name, k)
		}
	}
}

// A CA whose public certificate copy is missing (its creator stopped
// between the two writes) gets it back; the CA itself is kept.
func TestRenderHealsCACertificate(t *testing.T) {
	ctx := context.Background()
	st := fileStore(t)
	m := newMirror(t, testTable())
	data := clusterYAML(m.URL, clusterOpts{})
	mustRun(t, st, data, false)
	ks, _ := pki.NewKeystore(st, testCluster+"/pki", nil, nil)
	ca, err := ks.LoadCA(ctx, pki.CAKubernetes)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, testCluster+"/pki/"+pki.CAKubernetes+"/ca.crt"); err != nil {
		t.Fatal(err)
	}
	res := mustRun(t, st, data, true)
	var human bytes.Buffer
	res.Human(&human)
	if !strings.Contains(human.String(), "would update CA kubernetes-ca") || res.Changed() != 1 {
		t.Errorf("dry run with a missing ca.crt:\n%s", human.String())
	}
	mustRun(t, st, data, false)
	cert, err := ks.LoadCACert(ctx, pki.CAKubernetes)
	if err != nil || !cert.Equal(ca.Cert()) {
		t.Errorf("ca.crt after render: %v (same CA: %t)", err, err == nil && cert.Equal(ca.Cert()))
	}
}
