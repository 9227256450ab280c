package kuberender

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/testtools"
)

// TestRealContainerdUnderstandsOurConfig runs the real containerd
// (testtools.ContainerdVersion) on the rendered configuration with `config
// dump`, which prints the configuration containerd ended up with: a key
// containerd does not know is silently dropped there, so every setting we
// render must show up with our value.
func TestRealContainerdUnderstandsOurConfig(t *testing.T) {
	bin := testtools.ContainerdBin(t, "containerd")
	f := false
	rt := config.ContainerRuntimeSpec{
		Name: "containerd", Version: testtools.ContainerdVersion, SandboxImage: testtools.PauseImage,
		SystemdCgroup: &f, RestrictOOMScoreAdj: true,
		RegistryMirrors: map[string][]string{"docker.io": {"https://mirror.example.com"}},
	}
	p := ContainerdPaths{Runc: "/opt/test/runc", CNIBinDir: "/opt/test/cni", CNIConfDir: "/etc/test/cni", CertsDir: "/etc/test/certs.d"}
	cfg, _, err := ContainerdConfig(rt, p)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "config.toml")
	// Keep containerd's own directories in the test's.
	cfg = append([]byte("root = "+tomlString(filepath.Join(dir, "root"))+"\nstate = "+tomlString(filepath.Join(dir, "state"))+"\n"), cfg...)
	if err := os.WriteFile(file, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--config", file, "config", "dump").Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("containerd config dump: %v\n%s", err, stderr)
	}
	var dump map[string]any
	if err := toml.Unmarshal(out, &dump); err != nil {
		t.Fatalf("parsing the dump: %v\n%s", err, out)
	}
	get := func(path ...string) any {
		var cur any = dump
		for _, k := range path {
			m, ok := cur.(map[string]any)
			if !ok {
				return nil
			}
			cur = m[k]
		}
		return cur
	}
	images := []string{"plugins", "io.containerd.cri.v1.images"}
	runtime := []string{"plugins", "io.containerd.cri.v1.runtime"}
	runc := append(append([]string(nil), runtime...), "containerd", "runtimes", "runc")
	for _, c := range []struct {
		path []string
		want any
	}{
		{append(images, "pinned_images", "sandbox"), testtools.PauseImage},
		{append(images, "registry", "config_path"), p.CertsDir},
		{append(runtime, "restrict_oom_score_adj"), true},
		{append(runtime, "cni", "conf_dir"), p.CNIConfDir},
		{append(runtime, "containerd", "default_runtime_name"), "runc"},
		{append(runc, "runtime_type"), "io.containerd.runc.v2"},
		{append(runc, "options", "BinaryName"), p.Runc},
		{append(runc, "options", "SystemdCgroup"), false},
	} {
		if got := get(c.path...); got != c.want {
			t.Errorf("%v = %v, want %v", c.path, got, c.want)
		}
	}
	dirs, _ := get(append(runtime, "cni", "bin_dirs")...).([]any)
	if !slices.Contains(dirs, any(p.CNIBinDir)) {
		t.Errorf("cni bin_dirs = %v, want %s", dirs, p.CNIBinDir)
	}
	if t.Failed() {
		t.Logf("containerd config dump:\n%s", out)
	}
}

func tomlString(s string) string {
	b, _ := toml.Marshal(map[string]string{"v": s})
	return string(b[len("v = ") : len(b)-1])
}
