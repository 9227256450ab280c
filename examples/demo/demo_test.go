// Package demo holds the README's main-job demonstration: nodeup converging a
// scratch root from a file:// state store. The test keeps the script working.
package demo

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestDemoScript(t *testing.T) {
	work := t.TempDir()
	bin := filepath.Join(work, "nodeup")
	build := exec.Command("go", "build", "-o", bin, "../../nodeup/cmd/nodeup")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building nodeup: %v\n%s", err, out)
	}
	cmd := exec.Command("bash", "run.sh", filepath.Join(work, "demo"))
	cmd.Env = append(os.Environ(), "NODEUP="+bin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("run.sh: %v\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{
		"download file://",             // the plan names downloads without doing them
		"changed unit:kubelet.service", // the converge wrote the units
		"converge again: a converged node changes nothing\nno changes", // idempotent
		"nodeup dev: converged", // status
	} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q:\n%s", want, text)
		}
	}
	root := filepath.Join(work, "demo", "root")
	for _, p := range []string{"usr/local/bin/kubelet", "etc/systemd/system/kubelet.service", "var/lib/kubelet/bootstrap-kubeconfig"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("converged root lacks %s: %v", p, err)
		}
	}
}
