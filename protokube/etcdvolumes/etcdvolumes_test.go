package etcdvolumes

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/cli"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/flagargs"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/file"
	"github.com/kopsnode/agents/pkg/testtools"
	"github.com/kopsnode/agents/volumes"
	"github.com/kopsnode/agents/volumes/mount"
	"github.com/kopsnode/agents/volumes/slots"
)

// The systemd Manager is a recording fake: these tests are about mounting
// real volumes (real loop devices, mkfs, mount) and the order of mount and
// start; starting the real etcd-manager units through systemd's D-Bus API
// is exercised by the e2e tests on booted machines.
type fakeManager struct {
	t       *testing.T
	targets map[string]string // unit -> data directory that must be mounted

	// onStart, when set, runs what the unit would (a real etcd-manager).
	onStart func(unit string) error

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
	if f.onStart != nil {
		if err := f.onStart(unit); err != nil {
			f.state[unit] = "failed"
			return err
		}
	}
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
func loopDevice(t *testing.T) string { return loopDeviceSize(t, 32<<20) }

// loopDeviceSize is loopDevice of size bytes.
func loopDeviceSize(t *testing.T, size int64) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
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

// harness is one test's machine: a root prefix, a node configuration with
// the etcd cluster "main" whose metal disk is dev, a fake manager, a state
// store shared with the test's other machines and a config.
type harness struct {
	root, target, unit, cfgFile string
	cluster, machine            string
	node                        *config.NodeConfig
	mgr                         *fakeManager
	st                          store.Store
	cfg                         Config
	log                         *slog.Logger
}

// machineOpts vary a harness machine.
type machineOpts struct {
	cluster string // default: from the test name
	machine string // default "machine-a"
	members int    // default 1
	// volume is the etcd cluster's volume block (default: device dev);
	// scan the metal scan globs (default: dev).
	volume string
	scan   []string
	store  string // store directory shared between machines (default: new)
}

func testCluster(t *testing.T) string {
	return strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())) + ".k8s.local"
}

func newHarness(t *testing.T, dev string) *harness { return newMachine(t, dev, machineOpts{}) }

func newMachine(t *testing.T, dev string, o machineOpts) *harness {
	t.Helper()
	if o.cluster == "" {
		o.cluster = testCluster(t)
	}
	if o.machine == "" {
		o.machine = "machine-a"
	}
	if o.members == 0 {
		o.members = 1
	}
	if o.volume == "" {
		o.volume = "{device: " + dev + "}"
	}
	if o.scan == nil {
		o.scan = []string{dev}
	}
	if o.store == "" {
		o.store = t.TempDir()
	}
	root := t.TempDir()
	h := &harness{root: root, target: filepath.Join(root, "mnt", "etcd", "main"), unit: "etcd-manager-main.service", cluster: o.cluster, machine: o.machine}
	unmountOnCleanup(t, h.target)
	scan, _ := json.Marshal(o.scan)
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
      members: %d
      version: 3.6.16
      volume: %s
  volume:
    provider: metal
    metal: {scan: %s}
`, o.cluster, o.members, o.volume, scan)
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
	h.st, err = file.New(o.store, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.st.Close() })
	h.cfg = DefaultConfig()
	h.cfg.ConfigFile = h.cfgFile
	h.cfg.Store.URL = "file://" + o.store
	h.cfg.Root = root
	h.cfg.PollInterval = 10 * time.Millisecond
	h.cfg.DeviceTimeout = 200 * time.Millisecond
	h.cfg.MinBackoff = 20 * time.Millisecond
	h.cfg.MaxBackoff = 100 * time.Millisecond
	h.cfg.Interval = 50 * time.Millisecond
	h.cfg.SlotLease = time.Minute
	h.cfg.StatusListen = ""
	h.log = slog.New(slog.NewTextHandler(testWriter{t}, nil)).With("machine", o.machine)
	return h
}

func (h *harness) deps() Deps {
	return Deps{Logger: h.log, Manager: h.mgr, Store: h.st, Machine: h.machine}
}

func (h *harness) reconciler(t *testing.T) *Reconciler {
	t.Helper()
	r, err := NewReconciler(context.Background(), h.cfg, h.node, h.deps())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// lease reads the lease of slot from the harness's store.
func (h *harness) lease(t *testing.T, slot string) slots.Held {
	t.Helper()
	recs, err := (slots.Leases{Store: h.st, Layout: control.Layout{Cluster: h.cluster, EtcdCluster: "main"}}).Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return recs[slot]
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
	want := volumes.Selector{Cluster: h.node.Spec.ClusterName, EtcdCluster: "main", Slot: "main-1"}
	if id.Selector != want || m.Slot != "main-1" || m.Volume != dev {
		t.Errorf("identity %v, status slot %q volume %q; want %v on %s", id.Selector, m.Slot, m.Volume, want, dev)
	}
	if l := h.lease(t, "main-1"); l.Holder != h.machine || l.Volume != dev {
		t.Errorf("lease of main-1: %+v, want held by %s for %s", l, h.machine, dev)
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
	link := fmt.Sprintf("/dev/kopsnode-test-late-%d-%d", os.Getpid(), time.Now().UnixNano())
	t.Cleanup(func() { os.Remove(link) })
	h := newMachine(t, link, machineOpts{scan: []string{link}})
	h.cfg.StatusListen = "127.0.0.1:0"
	d, err := Start(context.Background(), h.cfg, h.node, h.deps())
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
			"etcd-volumes", "--once", "-o", "json", "--config", h.cfgFile, "--store", h.cfg.Store.URL, "--root", h.root, "--device-timeout", "5s"})
		var st Status
		if err := json.Unmarshal(out.Bytes(), &st); err != nil {
			t.Fatalf("stdout is not a status document: %v\n%s\nstderr:\n%s", err, out.String(), errb.String())
		}
		return code, st, errb.String()
	}
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		code, st, stderr := run()
		if code != 0 || !st.Ready || st.Machine != host || st.Provider != "metal" || onlyMember(t, st).Slot != "main-1" || !onlyMember(t, st).Mounted {
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
		"etcd-volumes", "--once", "--config", h.cfgFile, "--store", h.cfg.Store.URL, "--root", h.root, "--device-timeout", "50ms"})
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
	c.SlotLease = time.Second
	c.Output = "yaml"
	err := c.Validate()
	for _, want := range []string{"--config", "--store", "--root", "--max-backoff", "--slot-lease", "-o"} {
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

// A volume formatted for another cluster on the chosen disk is neither
// mounted nor used to start etcd-manager.
func TestOtherClustersVolumeRefused(t *testing.T) {
	testtools.RequireRoot(t)
	dev := loopDevice(t)
	other := newMachine(t, dev, machineOpts{cluster: "other-" + testCluster(t)})
	if st := other.reconciler(t).Pass(context.Background()); !st.Ready {
		t.Fatalf("formatting for the other cluster: %+v", st)
	}
	if err := mount.Unmount(other.target); err != nil {
		t.Fatal(err)
	}

	h := newHarness(t, dev)
	st := h.reconciler(t).Pass(context.Background())
	m := onlyMember(t, st)
	if st.Ready || m.Mounted || !m.Refused || !strings.Contains(m.Error, dev) || !strings.Contains(m.Error, "cluster="+other.cluster) {
		t.Fatalf("another cluster's volume: %+v", m)
	}
	if isMountPoint(t, h.target) {
		t.Fatalf("%s was mounted", h.target)
	}
	if n := h.mgr.Starts(h.unit); n != 0 {
		t.Fatalf("%s started %d times, want never", h.unit, n)
	}
}

// The shipped control-plane example had no disk: with none chosen the
// status says what to configure, and nothing is claimed.
func TestNoDiskSaysWhatToConfigure(t *testing.T) {
	h := newMachine(t, "", machineOpts{volume: "{sizeGiB: 20}", scan: []string{"/nonexistent/*"}})
	st := h.reconciler(t).Pass(context.Background())
	m := onlyMember(t, st)
	if st.Ready || !m.Refused || !strings.Contains(m.Error, "spec.etcdClusters[0].volume.device") {
		t.Fatalf("no disk chosen: %+v, want an error naming spec.etcdClusters[0].volume.device", m)
	}
	if l := h.lease(t, "main-1"); l.Holder != "" {
		t.Fatalf("a slot was claimed without a disk: %+v", l)
	}
	h2 := newMachine(t, "", machineOpts{volume: "{serials: [NO-SUCH-SERIAL]}", scan: []string{"/nonexistent/*"}})
	m = onlyMember(t, h2.reconciler(t).Pass(context.Background()))
	if !strings.Contains(m.Error, "serials NO-SUCH-SERIAL") || !strings.Contains(m.Error, "not found on this machine") {
		t.Fatalf("chosen serial absent: %+v", m)
	}
}

// Two machines share one store (different host names) and, as loop devices
// on one host, see each other's disks: the second can take neither the
// first's slot nor its volume, and takes a slot of its own on its own disk.
func TestSecondMachineCannotTakeHeldSlotOrVolume(t *testing.T) {
	testtools.RequireRoot(t)
	devA, devB := loopDevice(t), loopDevice(t)
	storeDir, cluster := t.TempDir(), testCluster(t)
	a := newMachine(t, devA, machineOpts{cluster: cluster, machine: "machine-a", members: 3, store: storeDir, scan: []string{devA, devB}})
	if st := a.reconciler(t).Pass(context.Background()); !st.Ready || onlyMember(t, st).Slot != "main-1" {
		t.Fatalf("machine a: %+v", st)
	}

	// b is given a's disk: the volume of main-1, whose lease a holds.
	b := newMachine(t, devA, machineOpts{cluster: cluster, machine: "machine-b", members: 3, store: storeDir, scan: []string{devA, devB}})
	for pass := range 2 {
		st := b.reconciler(t).Pass(context.Background())
		m := onlyMember(t, st)
		if st.Ready || m.Mounted || !strings.Contains(m.Error, "slot main-1") || !strings.Contains(m.Error, "held by machine machine-a") {
			t.Fatalf("pass %d: machine b with a's disk: %+v", pass, m)
		}
	}
	if isMountPoint(t, b.target) || b.mgr.Starts(b.unit) != 0 {
		t.Fatal("machine b mounted or started on a's volume")
	}
	if l := a.lease(t, "main-1"); l.Holder != "machine-a" {
		t.Fatalf("lease of main-1 now %+v", l)
	}

	// Given its own disk (a's still visible), b takes the next slot.
	b2 := newMachine(t, devB, machineOpts{cluster: cluster, machine: "machine-b", members: 3, store: storeDir, scan: []string{devB}})
	st := b2.reconciler(t).Pass(context.Background())
	if m := onlyMember(t, st); !st.Ready || m.Slot != "main-2" || m.Device != devB {
		t.Fatalf("machine b with its own disk: %+v", st)
	}
	if l := a.lease(t, "main-2"); l.Holder != "machine-b" || l.Volume != devB {
		t.Fatalf("lease of main-2: %+v", l)
	}
	// a's next pass renews its own lease and leaves b's alone.
	if st := a.reconciler(t).Pass(context.Background()); !st.Ready || onlyMember(t, st).Slot != "main-1" {
		t.Fatalf("machine a again: %+v", st)
	}
}

// A replacement machine (new host name) gets the dead machine's disk: it
// waits while the dead machine's lease is current, then adopts the slot and
// the volume, data kept, and starts etcd-manager.
func TestReplacementMachineAdoptsSlotAndVolume(t *testing.T) {
	testtools.RequireRoot(t)
	dev := loopDevice(t)
	storeDir, cluster := t.TempDir(), testCluster(t)
	// The lease outlasts the steps below (a sync of a loop device can
	// stall for seconds on a loaded machine) before b's first pass.
	const lease = 10 * time.Second
	a := newMachine(t, dev, machineOpts{cluster: cluster, machine: "machine-a", members: 3, store: storeDir})
	a.cfg.SlotLease = lease
	if st := a.reconciler(t).Pass(context.Background()); !st.Ready {
		t.Fatalf("machine a: %+v", st)
	}
	data := filepath.Join(a.target, "etcd", "data")
	if err := os.MkdirAll(filepath.Dir(data), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(data, []byte("member data"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Machine a dies: its disk is released (moved to the new machine).
	if err := mount.Unmount(a.target); err != nil {
		t.Fatal(err)
	}

	b := newMachine(t, dev, machineOpts{cluster: cluster, machine: "machine-b", members: 3, store: storeDir})
	b.cfg.SlotLease = lease
	r := b.reconciler(t)
	m := onlyMember(t, r.Pass(context.Background()))
	if m.Ready || !strings.Contains(m.Error, "held by machine machine-a") {
		t.Fatalf("while a's lease is current: %+v", m)
	}
	until := a.lease(t, "main-1").HeldUntil
	time.Sleep(time.Until(until) + 50*time.Millisecond)
	st := r.Pass(context.Background())
	if m := onlyMember(t, st); !st.Ready || m.Slot != "main-1" || m.Device != dev || m.FormattedAt == "" {
		t.Fatalf("after a's lease lapsed: %+v", st)
	}
	if b, err := os.ReadFile(filepath.Join(b.target, "etcd", "data")); err != nil || string(b) != "member data" {
		t.Fatalf("adopted volume's data: %q %v", b, err)
	}
	if l := b.lease(t, "main-1"); l.Holder != "machine-b" {
		t.Fatalf("lease of main-1: %+v", l)
	}
	if n := b.mgr.Starts(b.unit); n != 1 {
		t.Fatalf("%s started %d times, want 1", b.unit, n)
	}
}

// TestArgsAreTheInverseOfAddFlags: a configuration with every flag set
// renders arguments that parse back to the same configuration, and the
// defaults render nothing beyond the required flags.
func TestArgsAreTheInverseOfAddFlags(t *testing.T) {
	c := Config{
		ConfigFile: "/etc/nodeup/nodeconfig.yaml", SlotLease: 7 * time.Minute, Root: "/r",
		Interval: time.Minute, MinBackoff: 3 * time.Second, MaxBackoff: 3 * time.Minute, DeviceTimeout: time.Minute,
		PollInterval: DefaultConfig().PollInterval, StatusListen: "127.0.0.1:13990", Once: true, Output: "json",
	}
	c.Store.URL, c.Store.Endpoint, c.Store.Region, c.Store.PathStyle = "s3://b/p", "http://s3.local", "eu-west-1", true
	c.Log.Format, c.Log.Level = "json", "debug"
	args := c.Args()
	if args[0] != "etcd-volumes" {
		t.Fatalf("args %q do not start with the command", args)
	}
	back := DefaultConfig()
	fs := flag.NewFlagSet("etcd-volumes", flag.ContinueOnError)
	back.AddFlags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, c) {
		t.Fatalf("parsed back:\n%+v\nwant\n%+v", back, c)
	}
	if unset := flagargs.Unset(fs); len(unset) > 0 {
		t.Errorf("flags Args does not render: %v", unset)
	}
	d := DefaultConfig()
	d.ConfigFile, d.Store.URL = "/c", "file:///s"
	if got := strings.Join(d.Args(), " "); got != "etcd-volumes --config=/c --store=file:///s" {
		t.Errorf("defaults render %q", got)
	}
}
