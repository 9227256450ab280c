package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const hashBase = `apiVersion: agents.kopsnode.io/v1alpha1
kind: NodeConfig
metadata:
  name: nodes
spec:
  clusterName: example.k8s.local
  role: node
  kubernetesVersion: 1.32.4
  assets:
    - name: kubelet
      sha256: 861ab2df63cb8eb7bca38d0ff49ec7342484f029cc1e4029296cf3c7741b5b1d
      urls: [https://a.example.com/kubelet, https://b.example.com/kubelet]
  sysctls:
    net.ipv4.ip_forward: "1"
    vm.max_map_count: "262144"
  networking:
    mode: cni
    provider: bridge
  gossip: {}
`

// hashBaseReformatted means exactly what hashBase means: keys reordered,
// flow and block styles swapped, comments and blank lines added, quoting
// changed, and defaults written out.
const hashBaseReformatted = `# a comment
kind: NodeConfig
apiVersion: "agents.kopsnode.io/v1alpha1"

spec:
  networking: {provider: bridge, mode: cni, podCIDR: 100.96.0.0/11}
  gossip:
    port: 3996        # the default
  sysctls: {vm.max_map_count: 262144, "net.ipv4.ip_forward": 1}
  assets:
  - urls:
    - https://a.example.com/kubelet
    - 'https://b.example.com/kubelet'
    sha256: 861ab2df63cb8eb7bca38d0ff49ec7342484f029cc1e4029296cf3c7741b5b1d
    name: kubelet
    extract: false
  kubernetesVersion: "1.32.4"
  role: node
  containerRuntime:
    name: containerd
    systemdCgroup: true
  clusterName: example.k8s.local
metadata: {name: nodes}
`

func mustHash(t *testing.T, yamlText string) string {
	t.Helper()
	doc, err := Parse([]byte(yamlText), "t.yaml")
	if err != nil {
		t.Fatalf("%v\n%s", err, yamlText)
	}
	h, err := Hash(doc)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		t.Fatalf("hash %q is not lowercase hex sha256", h)
	}
	return h
}

func TestHashIgnoresFormatting(t *testing.T) {
	a, b := mustHash(t, hashBase), mustHash(t, hashBaseReformatted)
	if a != b {
		t.Errorf("equivalent documents hash differently: %s vs %s", a, b)
	}
	if FileHash([]byte(hashBase)) == FileHash([]byte(hashBaseReformatted)) {
		t.Error("FileHash of different bytes is equal")
	}
	// Hashing the decoded document before and after defaulting gives the
	// same value: Hash applies defaults itself.
	n, err := DecodeNodeConfig([]byte(hashBase), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	before, _ := Hash(n)
	SetDefaults(n)
	after, _ := Hash(n)
	if before != after || before != a {
		t.Errorf("hash depends on whether defaults were applied: %s %s %s", before, after, a)
	}
}

func TestHashChangesWithMeaning(t *testing.T) {
	edits := map[string][2]string{
		"kubernetes version": {"kubernetesVersion: 1.32.4", "kubernetesVersion: 1.32.5"},
		"role":               {"role: node", "role: control-plane\n  etcdClusters: [{name: main, members: 1, version: 3.5.21}]"},
		"asset URL order":    {"[https://a.example.com/kubelet, https://b.example.com/kubelet]", "[https://b.example.com/kubelet, https://a.example.com/kubelet]"},
		"asset hash":         {"7741b5b1d", "7741b5b1e"},
		"asset extract":      {"      urls: [", "      extract: true\n      urls: ["},
		"sysctl value":       {`vm.max_map_count: "262144"`, `vm.max_map_count: "262145"`},
		"sysctl removed":     {"    vm.max_map_count: \"262144\"\n", ""},
		"networking":         {"provider: bridge", "provider: flannel"},
		"gossip off":         {"  gossip: {}\n", ""},
		"gossip port":        {"gossip: {}", "gossip: {port: 3997}"},
		"systemd cgroup off": {"  gossip: {}\n", "  gossip: {}\n  containerRuntime: {systemdCgroup: false}\n"},
		"group name":         {"name: nodes", "name: nodes-b"},
		"package added":      {"  gossip: {}\n", "  gossip: {}\n  packages: [curl]\n"},
	}
	base := mustHash(t, hashBase)
	seen := map[string]string{base: "base"}
	for name, e := range edits {
		if !strings.Contains(hashBase, e[0]) {
			t.Fatalf("%s: %q not in the base document", name, e[0])
		}
		h := mustHash(t, strings.Replace(hashBase, e[0], e[1], 1))
		if other, dup := seen[h]; dup {
			t.Errorf("%s: same hash as %s", name, other)
		}
		seen[h] = name
	}
}

func TestHashDoesNotModifyAndRejectsOtherTypes(t *testing.T) {
	n, err := DecodeNodeConfig([]byte(hashBase), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	before, _ := Marshal(n)
	if _, err := Hash(n); err != nil {
		t.Fatal(err)
	}
	after, _ := Marshal(n)
	if string(before) != string(after) {
		t.Errorf("Hash modified its argument:\n%s\n%s", before, after)
	}
	for _, bad := range []any{nil, struct{}{}, (*Cluster)(nil), (*NodeConfig)(nil), Cluster{}} {
		if _, err := Hash(bad); err == nil {
			t.Errorf("Hash(%#v) succeeded", bad)
		}
	}
}

func TestFileHash(t *testing.T) {
	if got, want := FileHash(nil), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"; got != want {
		t.Errorf("FileHash(empty) = %s, want %s", got, want)
	}
	// A comment changes the file hash (what userdata pins) but not the
	// semantic hash.
	commented := hashBase + "# reviewed\n"
	if FileHash([]byte(hashBase)) == FileHash([]byte(commented)) {
		t.Error("FileHash ignores a comment")
	}
	if mustHash(t, hashBase) != mustHash(t, commented) {
		t.Error("Hash changes with a comment")
	}
}

// TestHashStable pins the hashes of the examples: the canonical encoding
// must not change by accident, because hashes are recorded outside this
// program. Run with -update after an intended change of the encoding, the
// defaults or the examples.
func TestHashStable(t *testing.T) {
	var b strings.Builder
	for _, path := range exampleFiles(t) {
		data, err := ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := Parse(data, path)
		if err != nil {
			t.Fatal(err)
		}
		h, err := Hash(doc)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(examplesDir, path)
		b.WriteString(filepath.ToSlash(rel) + " " + h + "\n")
	}
	golden := filepath.Join("testdata", "example-hashes.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("run with -update to create: %v", err)
	}
	if b.String() != string(want) {
		t.Errorf("example hashes changed (run with -update if intended):\ngot:\n%swant:\n%s", b.String(), want)
	}
}

func TestCheckFileHash(t *testing.T) {
	data := []byte(hashBase)
	if err := CheckFileHash(data, FileHash(data), "s3://b/c/nodeup/nodes.yaml"); err != nil {
		t.Fatalf("matching hash refused: %v", err)
	}
	if err := CheckFileHash(data, strings.ToUpper(FileHash(data)), "x"); err != nil {
		t.Errorf("uppercase pin refused: %v", err)
	}
	pinned := FileHash([]byte(hashBase + "# old\n"))
	err := CheckFileHash(data, pinned, "s3://b/c/nodeup/nodes.yaml")
	var mm *HashMismatchError
	if !errors.As(err, &mm) || mm.Pinned != pinned || mm.Actual != FileHash(data) {
		t.Fatalf("got %v, want a *HashMismatchError", err)
	}
	for _, s := range []string{"s3://b/c/nodeup/nodes.yaml", pinned, FileHash(data)} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %s", err, s)
		}
	}
}
