package releases

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kopsnode/agents/pkg/testtools/parts"
)

// The table's newest release is what tools/ builds, so the test mirror can
// serve it, and its CoreDNS image is the one protokube's Deployment runs.
func TestTableMatchesTestParts(t *testing.T) {
	r, err := Lookup(Table(), parts.KubernetesVersion)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, got, want string }{
		{"containerd", r.Containerd, parts.ContainerdVersion},
		{"runc", r.Runc, parts.RuncVersion},
		{"cni-plugins", r.CNIPlugins, parts.CNIPluginsVersion},
		{"pause", r.Pause.Ref, parts.PauseImage},
		{"coredns", r.CoreDNS.Ref, parts.CoreDNSImage},
	} {
		if c.got != c.want {
			t.Errorf("%s: table has %q, want %q", c.name, c.got, c.want)
		}
	}
	if !slices.Equal(r.Etcd, parts.EtcdVersions()) {
		t.Errorf("etcd versions %v, tools build %v", r.Etcd, parts.EtcdVersions())
	}
	for _, im := range parts.Images() {
		for _, ti := range []Image{r.Pause, r.CoreDNS} {
			if ti.Name == im.Name && !strings.HasSuffix(ti.Ref, ":"+ti.Version) && !strings.HasSuffix(ti.Ref, ":v"+ti.Version) {
				t.Errorf("image %s: ref %q does not carry version %q", ti.Name, ti.Ref, ti.Version)
			}
		}
	}
}

func TestLookupUnknownVersionListsSupported(t *testing.T) {
	if _, err := Lookup(Table(), "v1.37.2"); err != nil {
		t.Errorf("v-prefixed version: %v", err)
	}
	_, err := Lookup(Table(), "1.31.0")
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), `"1.31.0"`) || !strings.Contains(err.Error(), "supported: 1.37.2") {
		t.Errorf("error %v: want the version and the supported list", err)
	}
}

func TestFilesLayoutAndRoles(t *testing.T) {
	r := Table()[0]
	files, err := r.Files("1.2.3", []string{"3.6.16", "3.6.16"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]File{}
	for _, f := range files {
		if _, dup := got[f.Asset]; dup {
			t.Errorf("asset %s listed twice", f.Asset)
		}
		got[f.Asset] = f
	}
	want := map[string]struct {
		path         string
		controlPlane bool
	}{
		"kubelet":                 {"kubernetes/v1.37.2/bin/linux/amd64/kubelet", false},
		"kube-proxy":              {"kubernetes/v1.37.2/bin/linux/amd64/kube-proxy", false},
		"containerd":              {"containerd/v2.4.2/containerd-2.4.2-linux-amd64.tar.gz", false},
		"runc":                    {"runc/v1.4.4/runc.amd64", false},
		"cni-plugins":             {"cni-plugins/v1.10.0/cni-plugins-linux-amd64-v1.10.0.tgz", false},
		"image-pause":             {"images/pause-3.10.1.tar", false},
		"image-coredns":           {"images/coredns-1.15.0.tar", false},
		"protokube":               {"kopsnode/1.2.3/protokube", false},
		"kube-apiserver":          {"kubernetes/v1.37.2/bin/linux/amd64/kube-apiserver", true},
		"kube-controller-manager": {"kubernetes/v1.37.2/bin/linux/amd64/kube-controller-manager", true},
		"kube-scheduler":          {"kubernetes/v1.37.2/bin/linux/amd64/kube-scheduler", true},
		"kubectl":                 {"kubernetes/v1.37.2/bin/linux/amd64/kubectl", true},
		"etcd-manager":            {"kopsnode/1.2.3/etcd-manager", true},
		"etcd-3.6.16":             {"etcd/v3.6.16/etcd", true},
		"etcdutl-3.6.16":          {"etcd/v3.6.16/etcdutl", true},
	}
	if len(got) != len(want) {
		t.Errorf("%d assets, want %d: %v", len(got), len(want), got)
	}
	for name, w := range want {
		f, ok := got[name]
		if !ok || f.Path != w.path || f.ControlPlane != w.controlPlane {
			t.Errorf("asset %s: %+v, want path %s controlPlane %v", name, f, w.path, w.controlPlane)
		}
	}
	if c := got["containerd"]; !c.Extract || len(c.Members) != 3 || c.Members[0].Path != "bin/containerd" {
		t.Errorf("containerd archive: %+v", c)
	}
	if NodeupFile("1.2.3").Path != "kopsnode/1.2.3/nodeup" {
		t.Errorf("nodeup path %s", NodeupFile("1.2.3").Path)
	}
	if _, err := r.Files("1.2.3", []string{"3.4.0"}); err == nil || !strings.Contains(err.Error(), "3.5.21, 3.6.16, 3.7.3") {
		t.Errorf("etcd not allowed: %v", err)
	}
	if _, err := r.Files("../x", nil); err == nil {
		t.Error("a kopsnode version with a slash was accepted")
	}
}

func TestEmbeddedHashCarried(t *testing.T) {
	r := Table()[0]
	sum := strings.Repeat("ab", 32)
	r.SHA256 = map[string]string{"runc/v1.4.4/runc.amd64": sum}
	files, err := r.Files("dev", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if (f.Asset == "runc") != (f.SHA256 == sum) {
			t.Errorf("%s: embedded hash %q", f.Asset, f.SHA256)
		}
	}
}

func TestParseHashFile(t *testing.T) {
	sum := strings.Repeat("0a", 32)
	for _, ok := range []string{sum, sum + "\n", sum + "  kubelet\n", strings.ToUpper(sum) + " *kubelet"} {
		got, err := ParseHashFile([]byte(ok))
		if err != nil || got != sum {
			t.Errorf("%q: %q %v", ok, got, err)
		}
	}
	for _, bad := range []string{"", "\n", "abc", sum + " a b", "<html>not found</html>"} {
		if _, err := ParseHashFile([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// WriteMirror lays out every file with a .sha256 that matches it, and the
// same parts give the same archives (a re-built mirror pins the same hashes).
func TestWriteMirror(t *testing.T) {
	r := Table()[0]
	files, err := MirrorLayout(r, "dev")
	if err != nil {
		t.Fatal(err)
	}
	source := func(p Part) ([]byte, error) { return []byte("part " + p.String()), nil }
	dir1, dir2 := t.TempDir(), t.TempDir()
	for _, d := range []string{dir1, dir2} {
		if err := WriteMirror(d, files, source); err != nil {
			t.Fatal(err)
		}
	}
	if len(files) != 14+2*len(r.Etcd) {
		t.Errorf("%d files in the layout", len(files))
	}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(dir1, f.Path))
		if err != nil {
			t.Fatal(err)
		}
		hf, err := os.ReadFile(filepath.Join(dir1, f.Path+HashSuffix))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		got, err := ParseHashFile(hf)
		if err != nil || got != hex.EncodeToString(sum[:]) || !strings.HasSuffix(strings.TrimSpace(string(hf)), filepath.Base(f.Path)) {
			t.Errorf("%s: hash file %q (%v), content hash %x", f.Path, hf, err, sum)
		}
		other, _ := os.ReadFile(filepath.Join(dir2, f.Path))
		if string(other) != string(data) {
			t.Errorf("%s differs between two mirrors built from the same parts", f.Path)
		}
	}
	fail := func(p Part) ([]byte, error) { return nil, fmt.Errorf("no %s", p) }
	if err := WriteMirror(t.TempDir(), files, fail); err == nil || !strings.Contains(err.Error(), files[0].Path) {
		t.Errorf("a missing part: %v", err)
	}
	if err := WriteMirrorFile(t.TempDir(), "../escape", nil); err == nil {
		t.Error("a path out of the mirror was written")
	}
}
