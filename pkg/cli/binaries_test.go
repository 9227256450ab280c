package cli_test

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBinariesHelpAndVersion builds every binary of the suite and checks that
// each prints its help and its version, as the foundation promises.
func TestBinariesHelpAndVersion(t *testing.T) {
	bins := map[string]string{
		"nodeup":           "../../nodeup/cmd/nodeup",
		"protokube":        "../../protokube/cmd/protokube",
		"etcd-manager":     "../../etcd-manager/cmd/etcd-manager",
		"etcd-manager-ctl": "../../etcd-manager/cmd/etcd-manager-ctl",
	}
	dir := t.TempDir()
	for name, pkg := range bins {
		t.Run(name, func(t *testing.T) {
			bin := filepath.Join(dir, name)
			build := exec.Command("go", "build", "-o", bin, pkg)
			build.Env = append(build.Environ(), "CGO_ENABLED=0")
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("go build %s: %v\n%s", pkg, err, out)
			}
			out, err := exec.Command(bin, "--help").CombinedOutput()
			if err != nil {
				t.Fatalf("%s --help: %v\n%s", name, err, out)
			}
			if !strings.Contains(string(out), "Usage:") || !strings.Contains(string(out), "version") {
				t.Fatalf("%s --help does not show usage and the version command:\n%s", name, out)
			}
			out, err = exec.Command(bin, "version", "-o", "json").Output()
			if err != nil {
				t.Fatalf("%s version -o json: %v", name, err)
			}
			var v struct{ Binary, Version string }
			if err := json.Unmarshal(out, &v); err != nil || v.Binary != name || v.Version == "" {
				t.Fatalf("%s version -o json = %q (%v)", name, out, err)
			}
		})
	}
}
