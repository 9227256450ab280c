package parts

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// scriptVars reads the NAME="value" and NAME=(a b c) assignments of
// tools/build-test-tools.sh; NAME="${NAME:-default}" yields the default.
func scriptVars(t *testing.T) (map[string]string, map[string][]string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "tools", "build-test-tools.sh"))
	if err != nil {
		t.Fatal(err)
	}
	scalars := map[string]string{}
	arrays := map[string][]string{}
	scalarRE := regexp.MustCompile(`^([A-Z_]+)="(?:\$\{[A-Z_]+:-)?([^"}]*)\}?"$`)
	arrayRE := regexp.MustCompile(`^([A-Z_]+)=\(([^)]*)\)$`)
	for _, line := range strings.Split(string(b), "\n") {
		if m := scalarRE.FindStringSubmatch(line); m != nil {
			scalars[m[1]] = m[2]
		}
		if m := arrayRE.FindStringSubmatch(line); m != nil {
			arrays[m[1]] = strings.Fields(m[2])
		}
	}
	return scalars, arrays
}

// TestScriptAgrees: the shell script and these constants pin the same
// versions, images and binaries, so a bump in one place alone fails here.
func TestScriptAgrees(t *testing.T) {
	s, a := scriptVars(t)
	want := map[string]string{
		"MINIO_VERSION":       MinIOVersion,
		"FAKE_GCS_VERSION":    "v" + FakeGCSVersion,
		"COREDNS_VERSION":     "v" + CoreDNSVersion,
		"ETCD_VERSIONS":       strings.Join(EtcdVersions(), " "),
		"KUBERNETES_VERSION":  KubernetesVersion,
		"CONTAINERD_VERSION":  ContainerdVersion,
		"RUNC_VERSION":        RuncVersion,
		"CNI_PLUGINS_VERSION": CNIPluginsVersion,
		"PAUSE_IMAGE":         PauseImage,
		"COREDNS_IMAGE":       CoreDNSImage,
		"TESTAPP_IMAGE":       TestappImage,
	}
	for name, w := range want {
		got, ok := s[name]
		if !ok {
			t.Errorf("tools/build-test-tools.sh has no %s=\"...\" line", name)
			continue
		}
		if got != w {
			t.Errorf("tools/build-test-tools.sh: %s=%q, pkg/testtools/parts says %q", name, got, w)
		}
	}
	var cni []string
	for _, p := range a["CNI_PLUGINS"] {
		cni = append(cni, p[strings.IndexByte(p, '/')+1:])
	}
	for name, pair := range map[string][2][]string{
		"KUBERNETES_BINARIES": {a["KUBERNETES_BINARIES"], KubernetesBinaries()},
		"CONTAINERD_BINARIES": {a["CONTAINERD_BINARIES"], ContainerdBinaries()},
		"CNI_PLUGINS":         {cni, CNIPlugins()},
	} {
		got, w := slices.Sorted(slices.Values(pair[0])), slices.Sorted(slices.Values(pair[1]))
		if !slices.Equal(got, w) {
			t.Errorf("tools/build-test-tools.sh: %s is %q, pkg/testtools/parts says %q", name, got, w)
		}
	}
}

func TestExpectedLayout(t *testing.T) {
	ps := Expected([]string{"3.5.21"})
	paths := map[string]Part{}
	for _, p := range ps {
		if _, dup := paths[p.Path]; dup {
			t.Errorf("path %s listed twice", p.Path)
		}
		paths[p.Path] = p
	}
	for path, want := range map[string]Part{
		"kubernetes/v1.37.2/kubelet":         {Name: "kubelet", Version: "1.37.2"},
		"containerd/v2.4.2/bin/ctr":          {Name: "ctr", Version: "2.4.2"},
		"runc/v1.4.4/runc":                   {Name: "runc", Version: "1.4.4"},
		"cni/v1.10.0/host-local":             {Name: "host-local", Version: "1.10.0"},
		"etcd/v3.5.21/etcd":                  {Name: "etcd", Version: "3.5.21"},
		"etcd/v3.5.21/etcdutl":               {Name: "etcdutl", Version: "3.5.21"},
		"images/pause.tar":                   {Name: "pause", Version: "3.10.1", Image: PauseImage},
		"images/coredns.tar":                 {Name: "coredns", Version: "v1.15.0", Image: CoreDNSImage},
		"images/testapp.tar":                 {Name: "testapp", Version: "v1", Image: TestappImage},
		"bin/minio":                          {Name: "minio", Version: MinIOVersion},
		"kubernetes/v1.37.2/kube-apiserver":  {Name: "kube-apiserver", Version: "1.37.2"},
		"kubernetes/v1.37.2/kube-proxy":      {Name: "kube-proxy", Version: "1.37.2"},
		"containerd/v2.4.2/bin/containerd":   {Name: "containerd", Version: "2.4.2"},
		"cni/v1.10.0/bridge":                 {Name: "bridge", Version: "1.10.0"},
		"kubernetes/v1.37.2/kube-scheduler":  {Name: "kube-scheduler", Version: "1.37.2"},
		"containerd/v2.4.2/bin/containerd-s": {}, // not a part: must be absent
	} {
		got, ok := paths[path]
		if want.Name == "" {
			if ok {
				t.Errorf("%s listed", path)
			}
			continue
		}
		want.Path = path
		if !ok || got != want {
			t.Errorf("%s: %+v, want %+v", path, got, want)
		}
	}
}

// TestScanWriteRead: the manifest lists exactly the parts present, with
// their sha256, survives a write and read, and replaces the previous one.
func TestScanWriteRead(t *testing.T) {
	dir := t.TempDir()
	put := func(rel, content string) string {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256([]byte(content))
		return hex.EncodeToString(s[:])
	}
	kubelet := put(KubernetesPath("kubelet"), "kubelet")
	pause := put(ImagePath("pause"), "pause image")
	put("kubernetes/v1.0.0/kubelet", "another version: not a part")

	m, missing, err := Scan(dir, []string{"3.7.3"})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Parts) != 2 {
		t.Fatalf("parts %+v, want kubelet and pause", m.Parts)
	}
	if len(missing) != len(Expected([]string{"3.7.3"}))-2 || !slices.Contains(missing, EtcdPath("3.7.3")) || !slices.Contains(missing, EtcdutlPath("3.7.3")) {
		t.Errorf("missing %v", missing)
	}
	if err := WriteManifest(dir, Manifest{Parts: []Part{{Name: "old"}}}); err != nil {
		t.Fatal(err)
	}
	if err := WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	got, err := ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := got.Find(KubernetesPath("kubelet")); !ok || p.SHA256 != kubelet || p.Version != KubernetesVersion {
		t.Errorf("kubelet part %+v, want sha256 %s", p, kubelet)
	}
	if p, ok := got.Find(ImagePath("pause")); !ok || p.SHA256 != pause || p.Image != PauseImage {
		t.Errorf("pause part %+v", p)
	}
	if _, ok := got.Find("old"); ok || len(got.Parts) != 2 {
		t.Errorf("manifest not replaced: %+v", got.Parts)
	}
	ents, _ := filepath.Glob(filepath.Join(dir, ".parts.json-*"))
	if len(ents) != 0 {
		t.Errorf("temporary files left: %v", ents)
	}
	if err := os.WriteFile(filepath.Join(dir, ManifestFile), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadManifest(dir); err == nil || !strings.Contains(err.Error(), ManifestFile) {
		t.Errorf("corrupt manifest: %v, want an error naming the file", err)
	}
}

// TestScriptNoEarlyExitPipes: under `set -o pipefail` a pipe into a reader
// that exits early (head, grep -q) fails with SIGPIPE (exit 141) depending on
// timing; a cold CI run died of it once. The script must have none.
func TestScriptNoEarlyExitPipes(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "tools", "build-test-tools.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "\nset -euo pipefail\n") {
		t.Error("tools/build-test-tools.sh does not set -euo pipefail")
	}
	bad := regexp.MustCompile(`\|\s*(head|grep -[a-zA-Z]*[qm]|sed -n [^|]*q|awk [^|]*exit)`)
	for i, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if m := bad.FindString(line); m != "" {
			t.Errorf("tools/build-test-tools.sh:%d: %q pipes into a reader that may exit early", i+1, m)
		}
	}
}
