//go:build demo

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/kopsnode/agents/pkg/testtools"
	"github.com/kopsnode/agents/pkg/testtools/parts"
)

// Environment of the demo (make demo sets them).
const (
	// DemoDirEnv is where the demo writes its pid file and the admin
	// kubeconfig; make demo-down reads the pid file there.
	DemoDirEnv = "KOPSNODE_DEMO_DIR"
	// DemoNodesEnv is the number of worker machines (default 1).
	DemoNodesEnv = "KOPSNODE_DEMO_NODES"
)

const (
	defaultDemoDir = "/tmp/kopsnode-demo"
	demoPIDFile    = "demo.pid"
	demoKubeconfig = "admin.conf"
	// maxDemoNodes keeps the demo within what 2 cores and the network's
	// hosts carry.
	maxDemoNodes = 3
)

// TestDemo is `make demo`: a small local cluster of booted machines (one
// control-plane machine and KOPSNODE_DEMO_NODES workers) brought up as the
// cluster test does, left running with the admin kubeconfig on the host
// until Ctrl-C, SIGTERM or `make demo-down`, then removed. It is built only
// with the demo tag, so it is never part of a test run.
func TestDemo(t *testing.T) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	const steps = 6
	step := 0
	progress := func(format string, args ...any) {
		step++
		fmt.Printf("demo [%d/%d] %s\n", step, steps, fmt.Sprintf(format, args...))
	}

	progress("checking what the demo needs")
	if missing := demoMissing(); len(missing) > 0 {
		t.Fatalf("the demo cannot start; missing:\n  - %s", strings.Join(missing, "\n  - "))
	}
	workers, err := demoNodes(os.Getenv(DemoNodesEnv))
	if err != nil {
		t.Fatal(err)
	}
	dir := os.Getenv(DemoDirEnv)
	if dir == "" {
		dir = defaultDemoDir
	}
	claimDemoDir(t, dir)
	fmt.Println("demo: Ctrl-C, SIGTERM or `make demo-down` removes everything; during a boot step it takes effect when the step ends")

	progress("starting the infrastructure: a network of %d hosts, the S3 state store (MinIO), the release mirror", 1+workers)
	c := newClusterFixture(t, 1+workers)

	progress("booting 1 control-plane machine, then %d worker(s), from userdata through cloud-init (a few minutes)", workers)
	bc := c.bootCluster(clusterBoot{ControlPlanes: 1, Workers: workers})
	cp := bc.ControlPlanes[0]

	progress("writing the admin kubeconfig for the host")
	kc, err := hostKubeconfig(cp)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(dir, demoKubeconfig)
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatalf("writing %s: %v", kubeconfig, err)
	}
	if err := os.Chmod(kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}

	progress("kubectl get nodes -o wide, from the host")
	kubectl := testtools.KubernetesBin(t, "kubectl")
	kctx, cancel := context.WithTimeout(ctx, time.Minute)
	out, err := exec.CommandContext(kctx, kubectl, "--kubeconfig", kubeconfig, "get", "nodes", "-o", "wide").CombinedOutput()
	cancel()
	if err != nil {
		t.Fatalf("kubectl get nodes from the host: %v\n%s", err, out)
	}
	fmt.Printf("%s\n", out)

	progress("the cluster is up")
	fmt.Printf(`demo: admin kubeconfig: %s (API server %s, through the host link)
demo: kubectl:          %s
demo: try:              %s --kubeconfig %s get pods -A
demo: a machine shell:  nsenter -t %d -m -u -i -n -p -C -- bash   (%s)
demo: waiting; Ctrl-C here, or run `+"`make demo-down`"+` elsewhere, to remove everything
`, kubeconfig, hostAPIServer(cp), kubectl, kubectl, kubeconfig, cp.InitPID(), cp.Name())
	<-ctx.Done()
	fmt.Println("demo: removing the machines, their volumes and network, the store and the mirror")
}

// demoNodes parses KOPSNODE_DEMO_NODES.
func demoNodes(s string) (int, error) {
	if s == "" {
		return 1, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > maxDemoNodes {
		return 0, fmt.Errorf("%s=%q: want a number of workers from 0 to %d", DemoNodesEnv, s, maxDemoNodes)
	}
	return n, nil
}

// demoMissing lists everything the demo needs that this machine lacks,
// each with what provides it.
func demoMissing() []string {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root: run it as root (sudo make demo); machines, network namespaces and loop devices need it")
	}
	for _, c := range []struct{ cmd, pkg string }{
		{"systemd-nspawn", "systemd-container"},
		{"debootstrap", "debootstrap (builds the machines' Debian tree on first use)"},
		{"nsenter", "util-linux"},
		{"losetup", "mount"},
		{"ip", "iproute2"},
		{"go", "Go 1.26 (the demo builds the agents)"},
	} {
		if _, err := exec.LookPath(c.cmd); err != nil {
			missing = append(missing, fmt.Sprintf("the command %s: install %s", c.cmd, c.pkg))
		}
	}
	if _, err := os.Stat("/run/dbus/system_bus_socket"); err != nil {
		if _, err := exec.LookPath("dbus-daemon"); err != nil {
			missing = append(missing, "a system D-Bus for systemd-nspawn: install dbus")
		}
	}
	for _, p := range parts.Expected([]string{e2eEtcdVersion}) {
		path := filepath.Join(testtools.Dir(), p.Path)
		if _, err := os.Stat(path); err != nil {
			missing = append(missing, fmt.Sprintf("the part %s %s at %s: run `make tools` (TOOLS_DIR=%s)", p.Name, p.Version, path, testtools.Dir()))
		}
	}
	return missing
}

// claimDemoDir makes the demo's directory and its pid file, failing when
// another demo runs; both and the kubeconfig are removed last at cleanup,
// after the machines, so `make demo-down` returns once everything is gone.
func claimDemoDir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("creating %s: %v", dir, err)
	}
	pidPath := filepath.Join(dir, demoPIDFile)
	if b, err := os.ReadFile(pidPath); err == nil {
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 && syscall.Kill(pid, 0) == nil {
			t.Fatalf("a demo is already running (pid %d, %s): run `make demo-down` first", pid, pidPath)
		}
		fmt.Printf("demo: removing the stale pid file %s\n", pidPath)
	} else if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("reading %s: %v", pidPath, err)
	}
	if err := os.WriteFile(pidPath, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		t.Fatalf("writing %s: %v", pidPath, err)
	}
	t.Cleanup(func() {
		for _, f := range []string{demoKubeconfig, demoPIDFile} {
			if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("removing %s: %v", f, err)
			}
		}
		os.Remove(dir) // only if empty: it may hold a user's files
		fmt.Println("demo: everything removed")
	})
}
