package etcdvolumes

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kopsnode/agents/pkg/cli"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/testtools"
	"github.com/kopsnode/agents/volumes"
	"github.com/kopsnode/agents/volumes/mount"
)

// The systemd Manager is a recording fake: these tests are about mounting
// real volumes (real loop devices, mkfs, mount) and the order of mount and
// start; starting the real etcd-manager units through systemd's D-Bus API
// is exercised by the e2e tests on booted machines.
type fakeManager struct {
	t       *testing.T
	targets map[string]string // unit -> data directory that must be mounted

	mu     sync.Mutex
	starts map[string]int
	state  map[string]string
}

func newFakeManager(t *testing.T, targets map[string]string) *fakeManager {
	return &fakeManager{t: t, targets: targets, starts: map[string]int{}, state: map[string]string{}}
}

func (f *fakeManager) ActiveState(_ context.Context, unit string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.state[unit]; ok {
		return s, nil
	}
	return "inactive", nil
}

func (f *fakeManager) Start(_ context.Context, unit string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	target, ok := f.targets[unit]
	if !ok {
		f.t.Errorf("Start of unexpected unit %s", unit)
	} else if !isMountPoint(f.t, target) {
		f.t.Errorf("Start(%s) while its data directory %s is not a mount point", unit, target)
	}
	f.starts[unit]++
	f.state[unit] = "active"
	return nil
}

func (f *fakeManager) Starts(unit string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.starts[unit]
}

func (f *fakeManager) DaemonReload(context.Context) error    { return errors.New("not used") }
func (f *fakeManager) Enable(context.Context, string) error  { return errors.New("not used") }
func (f *fakeManager) Restart(context.Context, string) error { return errors.New("not used") }
func (f *fakeManager) Close() error                          { return nil }

func isMountPoint(t *testing.T, target string) bool {
	t.Helper()
	if r, err := filepath.EvalSymlinks(target); err == nil {
		target = r
	}
	ms, err := mount.Mounts()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.MountPoint == target {
			return true
		}
	}
	return false
}

// loopDevice attaches a blank sparse image of 32 MiB as a loop device,
// detached in t.Cleanup.
func loopDevice(t *testing.T) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 32<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup -f --show %s: %v: %s", img, err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// unmountOnCleanup unmounts target in t.Cleanup; register it after the
// device so it runs before the device is detached.
func unmountOnCleanup(t *testing.T, target string) {
	t.Cleanup(func() {
		for range 8 {
			err := unix.Unmount(target, 0)
			if err == unix.EINVAL || err == unix.ENOENT {
				return
			}
			if err != nil {
				t.Errorf("unmounting %s: %v", target, err)
				return
			}
		}
	})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// harness is one test's node: a root prefix, a node configuration with the
// etcd cluster "main", a fake manager and a config using the device.
type harness struct {
	root, target, unit, cfgFile string
	node                        *config.NodeConfig
	mgr                         *fakeManager
	cfg                         Config
	log                         *slog.Logger
}

func newHarness(t *testing.T, dev string) *harness {
	t.Helper()
	root := t.TempDir()
	h := &harness{root: root, target: filepath.Join(root, "mnt", "etcd", "main"), unit: "etcd-manager-main.service"}
	unmountOnCleanup(t, h.target)
	cluster := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())) + ".k8s.local"
	doc := fmt.Sprintf(`apiVersion: agents.kopsnode.io/v1alpha1
kind: NodeConfig
metadata:
  name: control-plane
spec:
  clusterName: %s
  role: control-plane
  kubernetesVersion: 1.32.4
  etcdClusters:
    - name: main
      members: 1
      version: 3.6.16
`, cluster)
	h.cfgFile = filepath.Join(root, "nodeconfig.yaml")
	if err := os.WriteFile(h.cfgFile, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	node, err := config.ParseNodeConfig([]byte(doc), h.cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	h.node = node
	h.mgr = newFakeManager(t, map[string]string{h.unit: h.target})
	h.cfg = DefaultConfig()
	h.cfg.ConfigFile = h.cfgFile
	h.cfg.MemberID = "etcd-a"
	h.cfg.Root = root
	h.cfg.Devices = map[string]string{"main": dev}
	h.cfg.Scan = []string{dev}
	h.cfg.PollInterval = 10 * time.Millisecond
	h.cfg.DeviceTimeout = 200 * time.Millisecond
	h.cfg.MinBackoff = 20 * time.Millisecond
	h.cfg.MaxBackoff = 100 * time.Millisecond
	h.cfg.Interval = 50 * time.Millisecond
	h.cfg.StatusListen = ""
	h.log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	return h
}

func (h *harness) reconciler(t *testing.T) *Reconciler {
	t.Helper()
	r, err := NewReconciler(h.cfg, h.node, Deps{Logger: h.log, Manager: h.mgr})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func onlyMember(t *testing.T, st Status) MemberStatus {
	t.Helper()
	if len(st.EtcdClusters) != 1 {
		t.Fatalf("status has %d etcd clusters, want 1: %+v", len(st.EtcdClusters), st)
	}
	return st.EtcdClusters[0]
}

func TestBlankDeviceFormattedMountedAndStartedOnce(t *testing.T) {
	testtools.RequireRoot(t)
	dev := loopDevice(t)
	h := newHarness(t, dev)
	r := h.reconciler(t)

	st := r.Pass(context.Background())
	m := onlyMember(t, st)
	if !st.Ready || !m.Ready || !m.Mounted || m.Error != "" {
		t.Fatalf("after the first pass: %+v", st)
	}
	if m.Target != h.target || m.Device != dev {
		t.Errorf("target %s device %s, want %s %s", m.Target, m.Device, h.target, dev)
	}
	if !isMountPoint(t, h.target) {
		t.Fatalf("%s is not mounted", h.target)
	}
	b, err := os.ReadFile(filepath.Join(h.target, volumes.IdentityFileName))
	if err != nil {
		t.Fatalf("identity file of the mounted volume: %v", err)
	}
	id, err := volumes.ParseIdentity("mounted", b)
	if err != nil {
		t.Fatal(err)
	}
	want := volumes.Selector{Cluster: h.node.Spec.ClusterName, EtcdCluster: "main", Member: "etcd-a"}
	if id.Selector != want {
		t.Errorf("identity %v, want %v", id.Selector, want)
	}
	if n := h.mgr.Starts(h.unit); n != 1 {
		t.Fatalf("%s started %d times after the first pass, want 1", h.unit, n)
	}

	st = r.Pass(context.Background())
	if m := onlyMember(t, st); !st.Ready || m.Starts != 1 || m.UnitState != "active" {
		t.Fatalf("after the second pass: %+v", st)
	}
	if n := h.mgr.Starts(h.unit); n != 1 {
		t.Fatalf("%s started %d times after the second pass, want still 1", h.unit, n)
	}
}

func TestForeignFilesystemNotMountedNeverStarted(t *testing.T) {
	testtools.RequireRoot(t)
	dev := loopDevice(t)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "data", dev).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %s: %v: %s", dev, err, out)
	}
	h := newHarness(t, dev)
	r := h.reconciler(t)

	for pass := range 2 {
		st := r.Pass(context.Background())
		m := onlyMember(t, st)
		if st.Ready || m.Ready || m.Mounted {
			t.Fatalf("pass %d: a foreign filesystem was accepted: %+v", pass, st)
		}
		if !strings.Contains(m.Error, dev) || !m.Refused {
			t.Fatalf("pass %d: error %q (refused %t) does not name %s as refused", pass, m.Error, m.Refused, dev)
		}
		if m.NextAttempt == nil || m.Failures != pass+1 {
			t.Fatalf("pass %d: failures %d next %v, want a retry scheduled", pass, m.Failures, m.NextAttempt)
		}
		// The second pass runs only after the backoff.
		waitFor(t, time.Second, "the retry time", func() bool { return !time.Now().Before(*m.NextAttempt) })
	}
	if isMountPoint(t, h.target) {
		t.Fatalf("%s was mounted", h.target)
	}
	if n := h.mgr.Starts(h.unit); n != 0 {
		t.Fatalf("%s started %d times, want never", h.unit, n)
	}
	// The foreign filesystem is untouched: still labelled "data".
	out, err := exec.Command("blkid", "-p", "-o", "value", "-s", "LABEL", dev).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "data" {
		t.Fatalf("blkid LABEL of %s: %q %v, want data", dev, out, err)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("decoding %s: %v: %s", url, err, b)
		}
	}
	return resp.StatusCode
}

func TestDeviceAppearsLateThenStarted(t *testing.T) {
	testtools.RequireRoot(t)
	dev := loopDevice(t)
	// The configured path is a stable name (like /dev/disk/by-id/...)
	// that does not exist yet.
	link := filepath.Join(t.TempDir(), "disk-main")
	h := newHarness(t, link)
	h.cfg.Scan = []string{filepath.Join(filepath.Dir(link), "disk-*")}
	h.cfg.StatusListen = "127.0.0.1:0"
	d, err := Start(context.Background(), h.cfg, h.node, Deps{Logger: h.log, Manager: h.mgr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	base := "http://" + d.StatusAddr()

	waitFor(t, 10*time.Second, "two failed attempts", func() bool { return onlyMember(t, d.Status()).Failures >= 2 })
	m := onlyMember(t, d.Status())
	if m.Ready || m.Mounted || m.Refused || !strings.Contains(m.Error, link) {
		t.Fatalf("while the device is missing: %+v (want an error naming %s)", m, link)
	}
	if n := h.mgr.Starts(h.unit); n != 0 {
		t.Fatalf("%s started %d times before its device appeared", h.unit, n)
	}
	if code := getJSON(t, base+"/healthz", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz while not ready: %d, want 503", code)
	}

	if err := os.Symlink(dev, link); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the member to be ready", func() bool { return d.Status().Ready })
	readyAt := onlyMember(t, d.Status()).LastAttempt
	if !isMountPoint(t, h.target) {
		t.Fatalf("%s not mounted", h.target)
	}
	// Let the level-triggered loop check the ready member twice more.
	waitFor(t, 10*time.Second, "two more passes", func() bool {
		return onlyMember(t, d.Status()).LastAttempt.After(readyAt.Add(h.cfg.Interval))
	})
	if n := h.mgr.Starts(h.unit); n != 1 {
		t.Fatalf("%s started %d times, want exactly 1", h.unit, n)
	}
	var st Status
	if code := getJSON(t, base+"/status", &st); code != http.StatusOK || !st.Ready || onlyMember(t, st).Device != dev {
		t.Fatalf("/status: %d %+v", code, st)
	}
	if code := getJSON(t, base+"/healthz", nil); code != http.StatusOK {
		t.Fatalf("/healthz when ready: %d, want 200", code)
	}
}

// The command with --once -o json, run twice like two boots of the unit:
// the first formats, mounts and starts; the second starts nothing.
func TestOnceCommandJSON(t *testing.T) {
	testtools.RequireRoot(t)
	dev := loopDevice(t)
	h := newHarness(t, dev)
	app := &cli.App{Name: "protokube", Commands: []*cli.Command{command(h.mgr)}}
	run := func() (int, Status, string) {
		var out, errb bytes.Buffer
		code := app.Run(context.Background(), &cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader("")}, []string{
			"etcd-volumes", "--once", "-o", "json", "--config", h.cfgFile, "--member-id", "etcd-a", "--root", h.root,
			"--device", "main=" + dev, "--scan", dev, "--device-timeout", "5s"})
		var st Status
		if err := json.Unmarshal(out.Bytes(), &st); err != nil {
			t.Fatalf("stdout is not a status document: %v\n%s\nstderr:\n%s", err, out.String(), errb.String())
		}
		return code, st, errb.String()
	}
	for i := range 2 {
		code, st, stderr := run()
		if code != 0 || !st.Ready || st.Member != "etcd-a" || !onlyMember(t, st).Mounted {
			t.Fatalf("run %d: exit %d status %+v\n%s", i, code, st, stderr)
		}
		if n := h.mgr.Starts(h.unit); n != 1 {
			t.Fatalf("run %d: %s started %d times, want 1", i, h.unit, n)
		}
	}
}

// --once exits non-zero, with the status printed, when a member is not ready.
func TestOnceCommandNotReadyExitsNonZero(t *testing.T) {
	testtools.RequireRoot(t)
	h := newHarness(t, "/dev/kopsnode-test-missing")
	app := &cli.App{Name: "protokube", Commands: []*cli.Command{command(h.mgr)}}
	var out, errb bytes.Buffer
	code := app.Run(context.Background(), &cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader("")}, []string{
		"etcd-volumes", "--once", "--config", h.cfgFile, "--member-id", "etcd-a", "--root", h.root,
		"--device", "main=/dev/kopsnode-test-missing", "--scan", "/dev/kopsnode-test-missing", "--device-timeout", "50ms"})
	if code != 1 || !strings.Contains(out.String(), "not ready") || !strings.Contains(out.String(), "/dev/kopsnode-test-missing") {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	if n := h.mgr.Starts(h.unit); n != 0 {
		t.Fatalf("started %d times", n)
	}
}

func TestConfigValidateNamesFlags(t *testing.T) {
	c := DefaultConfig()
	c.Root = "rel"
	c.MaxBackoff = time.Millisecond
	c.Devices = map[string]string{"main": "sdb"}
	c.Output = "yaml"
	err := c.Validate()
	for _, want := range []string{"--config", "--root", "--max-backoff", "devices.main", "-o"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error %v does not name %s", err, want)
		}
	}
}

func TestBackoffDoublesAndCaps(t *testing.T) {
	for _, c := range []struct {
		failures int
		want     time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {10, 10 * time.Second}, {1000, 10 * time.Second}} {
		if got := backoff(time.Second, 10*time.Second, c.failures); got != c.want {
			t.Errorf("backoff after %d failures = %s, want %s", c.failures, got, c.want)
		}
	}
}

// A volume formatted for another member (a disk moved between nodes) is
// neither mounted nor used to start etcd-manager.
func TestOtherMembersVolumeRefused(t *testing.T) {
	testtools.RequireRoot(t)
	dev := loopDevice(t)
	h := newHarness(t, dev)
	h.cfg.MemberID = "etcd-b"
	// Give the device to etcd-b first, then let it go.
	if st := h.reconciler(t).Pass(context.Background()); !st.Ready {
		t.Fatalf("formatting for etcd-b: %+v", st)
	}
	if err := mount.Unmount(h.target); err != nil {
		t.Fatal(err)
	}
	h.mgr = newFakeManager(t, map[string]string{h.unit: h.target})

	h.cfg.MemberID = "etcd-a"
	st := h.reconciler(t).Pass(context.Background())
	m := onlyMember(t, st)
	if st.Ready || m.Mounted || !m.Refused || !strings.Contains(m.Error, dev) || !strings.Contains(m.Error, "member=etcd-b") {
		t.Fatalf("another member's volume: %+v", m)
	}
	if isMountPoint(t, h.target) {
		t.Fatalf("%s was mounted", h.target)
	}
	if n := h.mgr.Starts(h.unit); n != 0 {
		t.Fatalf("%s started %d times, want never", h.unit, n)
	}
}
