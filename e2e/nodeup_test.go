package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/e2e/machine"
	"github.com/kopsnode/agents/pkg/bootstraptoken"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/pki"
	"github.com/kopsnode/agents/pkg/store/file"
	"github.com/kopsnode/agents/pkg/testtools"
)

const (
	e2eCluster = "e2e.k8s.local"
	e2eGroup   = "nodes"
	bootConfig = "/etc/nodeup/boot.yaml"
)

// The daemons nodeup starts on a worker of this configuration (protokube
// for gossip and kubenet pod routes).
var daemons = []string{"containerd.service", "kubelet.service", "protokube.service"}

// unitRun identifies one activation of a unit: a restart changes both.
type unitRun struct {
	InvocationID string
	ActiveEnter  string // ActiveEnterTimestampMonotonic
	MainPID      string
}

// nodeFixture is a machine, a file:// store bound into it, and an asset
// server inside its network namespace.
type nodeFixture struct {
	t         *testing.T
	m         *machine.Machine
	storeDir  string
	assets    *assetServer
	fake      []byte            // the fake daemon binary
	nodeup    string            // nodeup built for the host (renders the bootstrap script)
	nodeupBin []byte            // its content, served to the bootstrap script
	blobs     map[string][]byte // asset name -> content the configuration pins
}

func (f *nodeFixture) fakeAsset(name string) []byte {
	// Trailing bytes do not change how an ELF binary runs; they give each
	// asset its own sha256.
	return append(append([]byte(nil), f.fake...), []byte("\nfake "+name+"\n")...)
}

// standardAssets sets the assets the model needs.
func (f *nodeFixture) standardAssets() {
	f.blobs = map[string][]byte{
		"kubelet":   f.fakeAsset("kubelet"),
		"runc":      f.fakeAsset("runc"),
		"protokube": f.fakeAsset("protokube"),
		"containerd": testtools.TarGz(f.t, map[string][]byte{
			"bin/containerd":              f.fakeAsset("containerd"),
			"bin/containerd-shim-runc-v2": f.fakeAsset("shim"),
			"bin/ctr":                     f.fakeAsset("ctr"),
		}),
		"cni-plugins": testtools.TarGz(f.t, map[string][]byte{
			"./bridge": f.fakeAsset("bridge"), "./host-local": f.fakeAsset("host-local"),
			"./loopback": f.fakeAsset("loopback"), "./portmap": f.fakeAsset("portmap"),
		}),
	}
}

// assetList serves the assets, each version at its own URL as a release
// mirror would, and returns them as node configuration entries.
func (f *nodeFixture) assetList() string {
	var b strings.Builder
	for _, name := range []string{"kubelet", "runc", "protokube", "containerd", "cni-plugins"} {
		sum := sha256Hex(f.blobs[name])
		path := name + "-" + sum[:12]
		f.assets.set(path, f.blobs[name])
		fmt.Fprintf(&b, "    - name: %s\n      sha256: %s\n      urls:\n        - %s/%s\n", name, sum, f.assets.URL, path)
		if name == "containerd" || name == "cni-plugins" {
			b.WriteString("      extract: true\n")
		}
	}
	return b.String()
}

// nodeConfig renders the worker node configuration; maxPods is the knob
// the update step turns.
func nodeConfig(assets string, maxPods int) []byte {
	return []byte(`apiVersion: agents.kopsnode.io/v1alpha1
kind: NodeConfig
metadata:
  name: ` + e2eGroup + `
spec:
  clusterName: ` + e2eCluster + `
  role: node
  kubernetesVersion: 1.32.4
  assets:
` + assets + `  kubelet:
    apiServer: https://api.internal.` + e2eCluster + `
    maxPods: ` + fmt.Sprint(maxPods) + `
  networking:
    mode: kubenet
    podCIDR: 100.96.0.0/11
  gossip:
    seeds: store
`)
}

// putConfig writes the node configuration into the store as a file
// (the file:// store's objects are plain files) and returns its hash.
func (f *nodeFixture) putConfig(data []byte) string {
	f.t.Helper()
	p := filepath.Join(f.storeDir, e2eCluster, "nodeup", e2eGroup+".yaml")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	tmp := p + ".e2e-tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		f.t.Fatal(err)
	}
	return config.FileHash(data)
}

func (f *nodeFixture) unit(name string) unitRun {
	f.t.Helper()
	out := f.m.MustExec("systemctl", "show", "-p", "InvocationID,ActiveEnterTimestampMonotonic,MainPID", name)
	props := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(l, "=")
		props[k] = v
	}
	return unitRun{InvocationID: props["InvocationID"], ActiveEnter: props["ActiveEnterTimestampMonotonic"], MainPID: props["MainPID"]}
}

func (f *nodeFixture) runs() map[string]unitRun {
	f.t.Helper()
	r := map[string]unitRun{}
	for _, u := range daemons {
		r[u] = f.unit(u)
	}
	return r
}

func (f *nodeFixture) requireActive(units ...string) {
	f.t.Helper()
	for _, u := range units {
		out, err := f.m.Exec(context.Background(), "systemctl", "is-active", u)
		if got := strings.TrimSpace(out); got != "active" {
			journal, _ := f.m.Exec(context.Background(), "journalctl", "--no-pager", "-n", "40", "-u", u)
			f.t.Fatalf("%s is %q (%v), want active; journal:\n%s", u, got, err, journal)
		}
	}
}

func newNodeFixture(t *testing.T) *nodeFixture {
	f := &nodeFixture{t: t, storeDir: t.TempDir()}
	stageControlPlaneOutputs(t, f.storeDir)
	fakePath := buildBinary(t, "e2e/fakeservice")
	f.nodeup = buildBinary(t, "nodeup/cmd/nodeup")
	var err error
	if f.fake, err = os.ReadFile(fakePath); err != nil {
		t.Fatal(err)
	}
	if f.nodeupBin, err = os.ReadFile(f.nodeup); err != nil {
		t.Fatal(err)
	}
	return f
}

// stageControlPlaneOutputs writes what the first control-plane node
// publishes for workers: the kubernetes CA (a worker reads only its public
// certificate) and the node bootstrap token.
func stageControlPlaneOutputs(t *testing.T, storeDir string) {
	t.Helper()
	ctx := context.Background()
	st, err := file.New(storeDir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ks, err := pki.NewKeystore(st, e2eCluster+"/pki", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.EnsureCA(ctx, pki.CAKubernetes, pki.CAOptions{}); err != nil {
		t.Fatalf("staging the kubernetes CA: %v", err)
	}
	if _, _, err := bootstraptoken.Ensure(ctx, st, e2eCluster); err != nil {
		t.Fatalf("staging the bootstrap token: %v", err)
	}
}

// renderBootstrap renders the userdata with nodeup itself, as the tool
// that launches nodes would.
func (f *nodeFixture) renderBootstrap(pinned string, nodeupURLs ...string) []byte {
	f.t.Helper()
	args := []string{"bootstrap-script",
		"--store", "file://" + f.storeDir, "--cluster", e2eCluster, "--group", e2eGroup,
		"--config-hash", pinned, "--nodeup-sha256", sha256Hex(f.nodeupBin),
		"--attempts", "2", "--retry-delay", "1"}
	for _, u := range nodeupURLs {
		args = append(args, "--nodeup-url", u)
	}
	script, err := exec.Command(f.nodeup, args...).Output()
	if err != nil {
		f.t.Fatalf("nodeup bootstrap-script: %v", err)
	}
	return script
}

// bootstrap runs the userdata script inside the machine, as cloud-init
// would, and waits for the nodeup.service run it starts to succeed.
func (f *nodeFixture) bootstrap(script []byte) {
	f.t.Helper()
	if err := f.m.WriteFile("/var/lib/cloud/userdata.sh", script, 0o700); err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := f.m.Exec(ctx, "sh", "/var/lib/cloud/userdata.sh"); err != nil {
		f.t.Fatalf("bootstrap script: %v\n%s", err, out)
	}
	// nodeup.service is a oneshot started without waiting: wait for its run to end.
	waitFor(f.t, "nodeup.service to finish its first run", 2*time.Minute, func() (bool, string) {
		out, _ := f.m.Exec(context.Background(), "systemctl", "show", "-P", "ActiveState", "nodeup.service")
		exited, _ := f.m.Exec(context.Background(), "systemctl", "show", "-P", "ExecMainExitTimestampMonotonic", "nodeup.service")
		state := strings.TrimSpace(out)
		if state == "inactive" || state == "failed" {
			return strings.TrimSpace(exited) != "0", state
		}
		// Shown when the wait times out: which jobs systemd still has.
		jobs, _ := f.m.Exec(context.Background(), "systemctl", "list-jobs", "--no-legend")
		return false, fmt.Sprintf("%s; systemd jobs: %q", state, strings.TrimSpace(jobs))
	})
	if res := strings.TrimSpace(f.m.MustExec("systemctl", "show", "-P", "Result", "nodeup.service")); res != "success" {
		journal, _ := f.m.Exec(context.Background(), "journalctl", "--no-pager", "-n", "80", "-u", "nodeup.service")
		status, _ := f.m.Exec(context.Background(), "/usr/local/bin/nodeup", "status")
		f.t.Fatalf("nodeup.service result %q, want success\nstatus:\n%s\njournal:\n%s", res, status, journal)
	}
}

// runNodeup runs nodeup apply inside the machine as an operator over SSH
// would, with the boot configuration the bootstrap script wrote.
func (f *nodeFixture) runNodeup(extra ...string) (stdout string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := append([]string{"/usr/local/bin/nodeup", "apply", "--boot-config", bootConfig, "--task-timeout", "1m"}, extra...)
	return f.m.Exec(ctx, args...)
}

// TestNodeupOnBootedMachine runs the bootstrap script inside a machine with
// systemd as PID 1, as cloud-init would: it downloads nodeup from the
// asset server, installs nodeup.service and starts it; nodeup converges the
// node from a file:// store. The test then checks that the daemons are
// active, that a re-run restarts nothing, that a changed configuration is
// refused while the node does not follow updates, and that following it
// restarts only the kubelet, whose configuration changed.
func TestNodeupOnBootedMachine(t *testing.T) {
	f := newNodeFixture(t)
	f.m = machine.Boot(t, machine.Options{
		PrivateNetwork: true,
		// The store is read and written (the kubelet's client certificate
		// is issued from a CA nodeup creates there) at the same path.
		Binds: []machine.Bind{{Source: f.storeDir}},
	})
	ln, err := f.m.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("asset server: %v", err)
	}
	f.assets = newAssetServer(t, ln)
	f.assets.set("nodeup", f.nodeupBin)
	f.standardAssets()
	pinned := f.putConfig(nodeConfig(f.assetList(), 110))

	f.bootstrap(f.renderBootstrap(pinned, f.assets.URL+"/nodeup"))
	f.requireActive(daemons...)
	if got := strings.TrimSpace(f.m.MustExec("systemctl", "is-enabled", "nodeup.service")); got != "enabled" {
		t.Errorf("nodeup.service is %q, want enabled (it must run on every boot)", got)
	}
	for _, u := range daemons {
		if got := strings.TrimSpace(f.m.MustExec("systemctl", "is-enabled", u)); got != "enabled" {
			t.Errorf("%s is %q, want enabled", u, got)
		}
	}
	var status struct {
		Result     string `json:"result"`
		ConfigHash string `json:"configHash"`
	}
	if err := json.Unmarshal([]byte(f.m.MustExec("/usr/local/bin/nodeup", "status", "-o", "json")), &status); err != nil {
		t.Fatalf("nodeup status -o json: %v", err)
	}
	if status.Result != "converged" {
		t.Errorf("nodeup status result = %q, want converged", status.Result)
	}
	first := f.runs()
	t.Logf("after the first run: %v", first)
	for u, r := range first {
		if r.InvocationID == "" || r.MainPID == "0" {
			t.Errorf("%s has no running invocation: %+v", u, r)
		}
	}
	requests := f.assets.requests.Load()

	// A second run, as on the next boot, changes nothing and restarts nothing.
	f.m.MustExec("systemctl", "start", "nodeup.service")
	if res := strings.TrimSpace(f.m.MustExec("systemctl", "show", "-P", "Result", "nodeup.service")); res != "success" {
		t.Errorf("second nodeup.service run: result %q", res)
	}
	out, err := f.runNodeup()
	if err != nil {
		t.Fatalf("re-run of nodeup apply: %v", err)
	}
	t.Logf("re-run output: %q", out)
	if strings.Contains(out, "changed") {
		t.Errorf("re-run on a converged node changed things:\n%s", out)
	}
	if again := f.runs(); !equalRuns(first, again) {
		t.Errorf("re-runs restarted units:\nbefore %v\nafter  %v", first, again)
	}
	if n := f.assets.requests.Load(); n != requests {
		t.Errorf("re-runs downloaded %d more assets; the cache should serve them", n-requests)
	}

	// After a reboot nodeup.service runs again, finds the node converged
	// (the daemons were started by systemd as enabled units) and restarts
	// nothing.
	f.m.Reboot()
	if res := strings.TrimSpace(f.m.MustExec("systemctl", "show", "-P", "Result", "nodeup.service")); res != "success" {
		t.Errorf("nodeup.service at boot: result %q", res)
	}
	if ran := strings.TrimSpace(f.m.MustExec("systemctl", "show", "-P", "ExecMainExitTimestampMonotonic", "nodeup.service")); ran == "0" {
		t.Errorf("nodeup.service did not run at boot")
	}
	f.requireActive(daemons...)
	if journal := f.m.MustExec("journalctl", "--no-pager", "-b", "-o", "cat", "-u", "nodeup.service"); strings.Contains(journal, "restarting unit") {
		t.Errorf("nodeup restarted units at boot on a converged node:\n%s", journal)
	}
	first = f.runs()

	// The configuration changes in the store behind the node's back.
	changed := f.putConfig(nodeConfig(f.assetList(), 50))
	out, err = f.runNodeup()
	var ee *machine.ExecError
	if err == nil {
		t.Fatalf("nodeup applied a configuration whose hash differs from the pinned one:\n%s", out)
	} else if !errors.As(err, &ee) || !strings.Contains(ee.Stderr, pinned) || !strings.Contains(ee.Stderr, changed) {
		t.Errorf("refusal should name both hashes (pinned %s, actual %s): %v", pinned, changed, err)
	}
	t.Logf("refused: %v", err)
	if again := f.runs(); !equalRuns(first, again) {
		t.Errorf("a refused configuration restarted units:\nbefore %v\nafter  %v", first, again)
	}

	// Following updates applies it and restarts only the kubelet.
	out, err = f.runNodeup("--follow-updates")
	if err != nil {
		t.Fatalf("nodeup apply --follow-updates: %v", err)
	}
	t.Logf("update output:\n%s", out)
	t.Logf("after the update: %v", f.runs())
	if !strings.Contains(out, "/var/lib/kubelet/config.yaml") {
		t.Errorf("update output does not mention the kubelet config:\n%s", out)
	}
	if cfg := f.m.MustExec("cat", "/var/lib/kubelet/config.yaml"); !strings.Contains(cfg, "maxPods: 50") {
		t.Errorf("kubelet config not updated:\n%s", cfg)
	}
	f.requireActive(daemons...)
	after := f.runs()
	checkRestarted(t, first, after, "kubelet.service")

	// A new runc binary (a declared input of containerd.service): only
	// containerd restarts.
	f.blobs["runc"] = f.fakeAsset("runc 1.2.99")
	f.putConfig(nodeConfig(f.assetList(), 50))
	requests = f.assets.requests.Load()
	if out, err = f.runNodeup("--follow-updates"); err != nil {
		t.Fatalf("nodeup apply --follow-updates (new runc): %v", err)
	}
	t.Logf("runc update output:\n%s", out)
	if f.assets.requests.Load() == requests {
		t.Errorf("the new runc was not downloaded")
	}
	if got := strings.TrimSpace(f.m.MustExec("sha256sum", "/usr/local/sbin/runc")); !strings.HasPrefix(got, sha256Hex(f.blobs["runc"])) {
		t.Errorf("installed runc: %s, want sha256 %s", got, sha256Hex(f.blobs["runc"]))
	}
	f.requireActive(daemons...)
	checkRestarted(t, after, f.runs(), "containerd.service")
}

// checkRestarted asserts that exactly the named unit got a new invocation.
func checkRestarted(t *testing.T, before, after map[string]unitRun, want string) {
	t.Helper()
	for _, u := range daemons {
		restarted := after[u].InvocationID != before[u].InvocationID || after[u].ActiveEnter != before[u].ActiveEnter
		if restarted != (u == want) {
			t.Errorf("%s restarted = %v, want %v (before %+v, after %+v)", u, restarted, u == want, before[u], after[u])
		}
	}
}

func equalRuns(a, b map[string]unitRun) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
