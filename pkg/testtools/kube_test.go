package testtools

import (
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/pkg/testtools/parts"
)

func output(t *testing.T, env []string, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// static says whether an executable has no ELF interpreter: it runs in any
// machine tree, whatever its libc.
func static(t *testing.T, path string) bool {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// TestKubernetesVersions: every Kubernetes command built by make tools says
// the pinned version, and is static.
func TestKubernetesVersions(t *testing.T) {
	want := "v" + KubernetesVersion
	for _, name := range parts.KubernetesBinaries() {
		t.Run(name, func(t *testing.T) {
			bin := KubernetesBin(t, name)
			args := []string{"--version"}
			if name == "kubectl" {
				args = []string{"version", "--client"}
			}
			out := output(t, nil, bin, args...)
			if !strings.Contains(out, want) {
				t.Errorf("%s %s says %q, want %s", name, strings.Join(args, " "), out, want)
			}
			if !static(t, bin) {
				t.Errorf("%s is dynamically linked", bin)
			}
		})
	}
}

// TestContainerdRuncCNIVersions: containerd, its shim, ctr, runc (with
// seccomp, static) and the CNI plugins say their pinned versions.
func TestContainerdRuncCNIVersions(t *testing.T) {
	for _, c := range []struct {
		bin  string
		args []string
		want []string
	}{
		{ContainerdBin(t, "containerd"), []string{"--version"}, []string{"v" + ContainerdVersion}},
		{ContainerdBin(t, "ctr"), []string{"--version"}, []string{"v" + ContainerdVersion}},
		{ContainerdBin(t, "containerd-shim-runc-v2"), []string{"-v"}, []string{"v" + ContainerdVersion}},
		// libseccomp's version is printed only when runc has seccomp.
		{RuncBin(t), []string{"--version"}, []string{"runc version " + RuncVersion, "libseccomp: 2."}},
	} {
		out := output(t, nil, c.bin, c.args...)
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s %s says %q, want %q in it", c.bin, strings.Join(c.args, " "), out, w)
			}
		}
		if !static(t, c.bin) {
			t.Errorf("%s is dynamically linked", c.bin)
		}
	}
	dir := CNIPluginDir(t)
	for _, name := range parts.CNIPlugins() {
		bin := filepath.Join(dir, name)
		out := output(t, []string{"CNI_COMMAND=VERSION"}, bin)
		var v struct {
			SupportedVersions []string `json:"supportedVersions"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil || !slices.Contains(v.SupportedVersions, "1.0.0") {
			t.Errorf("%s VERSION: %q (%v), want CNI 1.0.0 among the supported versions", name, out, err)
		}
		// Without CNI_COMMAND a plugin prints its name and build version.
		about, _ := exec.Command(bin).CombinedOutput()
		if !strings.Contains(string(about), "v"+CNIPluginsVersion) {
			t.Errorf("%s says %q, want v%s", name, about, CNIPluginsVersion)
		}
	}
}

// TestPartsManifest: parts.json lists every part of a complete make tools
// run with the sha256 of the file on disk.
func TestPartsManifest(t *testing.T) {
	m := Parts(t)
	for _, want := range parts.Expected(parts.EtcdVersions()) {
		p, ok := m.Find(want.Path)
		if !ok {
			t.Errorf("parts.json lacks %s", want.Path)
			continue
		}
		if p.Name != want.Name || p.Version != want.Version || p.Image != want.Image {
			t.Errorf("parts.json: %+v, want %+v", p, want)
		}
	}
	// The manifest says what is on disk (checked on a small part).
	b, err := os.ReadFile(ImageTar(t, "pause"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if p, _ := m.Find(parts.ImagePath("pause")); p.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("parts.json says %s has sha256 %s, the file has %x", p.Path, p.SHA256, sum)
	}
}

// TestContainerdRunsImages runs real containerd and runc on the host with
// the image tarballs of make tools: they import, the test workload answers
// as a server and as a client and resolves names, pause and the workload
// stop on SIGTERM as PID 1, CoreDNS starts. The harness's cleanup checks
// that nothing is left on the host.
func TestContainerdRunsImages(t *testing.T) {
	c := StartContainerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	testapp := c.ImportImage(t, "testapp")
	pause := c.ImportImage(t, "pause")
	coredns := c.ImportImage(t, "coredns")
	list, err := c.Ctr(ctx, "images", "list", "--quiet")
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{TestappImage, PauseImage, CoreDNSImage} {
		if !slices.Contains(strings.Fields(list), ref) {
			t.Errorf("image %s not listed after import: %q", ref, list)
		}
	}

	out, err := c.Run(ctx, testapp, "lookup", "/testapp", "lookup", "localhost")
	if err != nil || !strings.Contains(out, "127.0.0.1") {
		t.Errorf("testapp lookup localhost: %q, %v; want 127.0.0.1", out, err)
	}

	addr := freeAddr(t)
	if err := c.Start(ctx, testapp, "serve", "/testapp", "serve", "--listen", addr); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	var body string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		break
	}
	if body != host+"\n" {
		t.Errorf("GET / of the testapp container answered %q, want the hostname %q", body, host)
	}
	out, err = c.Run(ctx, testapp, "get", "/testapp", "get", "http://"+addr+"/healthz")
	if err != nil || out != "ok\n" {
		t.Errorf("testapp get /healthz from a second container: %q, %v; want ok", out, err)
	}
	if out, err := c.Run(ctx, testapp, "get-fails", "/testapp", "get", "--timeout", "2s", "http://"+addr+"/missing"); err == nil {
		t.Errorf("testapp get of a missing page succeeded: %q", out)
	}
	if err := c.Stop(ctx, "serve", 20*time.Second); err != nil {
		t.Errorf("testapp serve on SIGTERM: %v", err)
	}

	if err := c.Start(ctx, pause, "pause"); err != nil {
		t.Fatal(err)
	}
	if st, err := c.TaskStatus(ctx, "pause"); err != nil || st != "RUNNING" {
		t.Errorf("pause task %q, %v; want RUNNING", st, err)
	}
	// The container has cgroups under the namespace's name, which the
	// harness removes (and checks) in its cleanup.
	if len(cgroupDirs(c.Namespace)) == 0 {
		t.Errorf("no cgroup named %s while the pause container runs", c.Namespace)
	}
	if err := c.Stop(ctx, "pause", 20*time.Second); err != nil {
		t.Errorf("pause on SIGTERM: %v", err)
	}

	out, err = c.Run(ctx, coredns, "coredns", "/coredns", "-version")
	if err != nil || !strings.Contains(out, "CoreDNS-"+CoreDNSVersion) {
		t.Errorf("coredns -version: %q, %v", out, err)
	}
}
