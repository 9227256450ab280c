package machine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBootRunTransientUnitAndStopCleanly boots a machine, checks that
// systemd is PID 1 and running, that files and binds given at boot are
// there, that a transient unit started with systemd-run becomes active, and
// that Stop leaves no process, mount or cgroup behind.
func TestBootRunTransientUnitAndStopCleanly(t *testing.T) {
	shared := t.TempDir()
	if err := os.WriteFile(filepath.Join(shared, "hello"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := Boot(t, Options{
		Files: []File{{Path: "/etc/kopsnode-test/greeting", Data: []byte("hi\n"), Mode: 0o600}},
		Binds: []Bind{{Source: shared, Target: "/srv/shared", ReadOnly: true}},
	})

	if got := strings.TrimSpace(m.MustExec("systemctl", "is-system-running")); got != "running" {
		failed, _ := m.Exec(context.Background(), "systemctl", "--failed", "--no-legend")
		t.Errorf("is-system-running = %q, want running; failed units: %s", got, failed)
	}
	if got := strings.TrimSpace(m.MustExec("cat", "/proc/1/comm")); got != "systemd" {
		t.Errorf("PID 1 inside is %q, want systemd", got)
	}
	if got := strings.TrimSpace(m.MustExec("hostname")); got != m.Name() {
		t.Errorf("hostname = %q, want %q", got, m.Name())
	}
	if got := m.MustExec("stat", "-c", "%a %s", "/etc/kopsnode-test/greeting"); strings.TrimSpace(got) != "600 3" {
		t.Errorf("file written at boot: stat = %q, want \"600 3\"", got)
	}
	if got := m.MustExec("cat", "/srv/shared/hello"); got != "from the host\n" {
		t.Errorf("bound file = %q", got)
	}
	if _, err := m.Exec(context.Background(), "touch", "/srv/shared/x"); err == nil {
		t.Errorf("read-only bind is writable")
	}

	m.MustExec("systemd-run", "--unit=probe", "--property=Description=harness probe", "sleep", "infinity")
	if got := strings.TrimSpace(m.MustExec("systemctl", "is-active", "probe.service")); got != "active" {
		t.Errorf("probe.service is %q, want active", got)
	}
	// The unit's process lives in the machine's pid namespace, not the host's.
	mainPID := strings.TrimSpace(m.MustExec("systemctl", "show", "-P", "MainPID", "probe.service"))
	if mainPID == "0" || mainPID == "" {
		t.Errorf("probe.service has no main pid")
	}

	var ee *ExecError
	_, err := m.Exec(context.Background(), "sh", "-c", "echo oops >&2; exit 3")
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(ee.Stderr, "oops") {
		t.Errorf("failing command: err = %v, want ExecError with exit 3 and stderr", err)
	}

	pidNS := m.pidNS
	nspawnPID := m.cmd.Process.Pid
	cgroups := append([]string(nil), m.cgroups...)
	if len(cgroups) == 0 {
		t.Errorf("machine has no cgroups of its own")
	}
	if err := m.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if left := processesInNamespace(pidNS); len(left) > 0 {
		t.Errorf("processes left in the machine's pid namespace: %v", left)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", nspawnPID)); err == nil {
		t.Errorf("systemd-nspawn (pid %d) still exists", nspawnPID)
	}
	if mounted(t, m.Root()) {
		t.Errorf("%s still mounted", m.Root())
	}
	for _, c := range cgroups {
		if _, err := os.Stat(c); err == nil {
			t.Errorf("cgroup %s left behind", c)
		}
	}
	if err := m.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := m.Exec(context.Background(), "true"); err == nil {
		t.Errorf("Exec after Stop succeeded")
	}
}

// TestRebootKeepsFilesAndStartsEnabledUnits reboots a machine: files on
// disk survive, /run and running processes do not, and a unit enabled for
// multi-user.target runs at the next boot.
func TestRebootKeepsFilesAndStartsEnabledUnits(t *testing.T) {
	m := Boot(t, Options{})
	unit := "[Unit]\nDescription=boot marker\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'echo booted >> /var/lib/boots'\n[Install]\nWantedBy=multi-user.target\n"
	if err := m.WriteFile("/etc/systemd/system/marker.service", []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	m.MustExec("systemctl", "enable", "marker.service")
	m.MustExec("systemd-run", "--unit=transient", "sleep", "infinity")
	m.MustExec("sh", "-c", "echo x > /run/volatile && echo y > /var/lib/kept")
	firstInit := m.InitPID()

	m.Reboot()
	if m.InitPID() == firstInit || m.InitPID() == 0 {
		t.Errorf("init pid after reboot = %d (before %d)", m.InitPID(), firstInit)
	}
	if got := strings.TrimSpace(m.MustExec("cat", "/var/lib/boots")); got != "booted" {
		t.Errorf("/var/lib/boots = %q, want one line from the boot after enabling", got)
	}
	if got := strings.TrimSpace(m.MustExec("systemctl", "is-active", "marker.service")); got != "active" {
		t.Errorf("marker.service after reboot is %q", got)
	}
	if out, _ := m.Exec(context.Background(), "systemctl", "is-active", "transient.service"); strings.TrimSpace(out) == "active" {
		t.Errorf("transient unit survived the reboot")
	}
	if got := m.MustExec("cat", "/var/lib/kept"); got != "y\n" {
		t.Errorf("/var/lib/kept = %q after reboot", got)
	}
	if _, err := m.Exec(context.Background(), "test", "-e", "/run/volatile"); err == nil {
		t.Errorf("/run/volatile survived the reboot")
	}
	if err := m.Stop(); err != nil {
		t.Fatalf("Stop after reboot: %v", err)
	}
}

// TestPrivateNetworkListen boots a machine in its own network namespace and
// serves HTTP to it from a listener opened inside that namespace: the
// machine reaches it on 127.0.0.1, the host does not.
func TestPrivateNetworkListen(t *testing.T) {
	m := Boot(t, Options{PrivateNetwork: true})
	ln, err := m.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "inside")
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	url := "http://" + ln.Addr().String() + "/"
	if got := m.MustExec("curl", "-fsS", "--max-time", "10", url); got != "inside" {
		t.Errorf("curl inside = %q, want %q", got, "inside")
	}
	// The same address on the host is another namespace's loopback: the host
	// must not reach our server there. (Another process of the host may
	// happen to listen on the same port number, so ask what answers.)
	hc := &http.Client{Timeout: 2 * time.Second}
	if resp, err := hc.Get(url); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) == "inside" {
			t.Errorf("host reached the machine's server at %s, which should exist only inside the machine", ln.Addr())
		}
	}
	links := m.MustExec("ip", "-o", "link", "show")
	if n := strings.Count(strings.TrimSpace(links), "\n") + 1; n != 1 || !strings.Contains(links, "lo:") {
		t.Errorf("machine links = %q, want only lo", links)
	}
	ns := m.NetNSPath()
	if err := m.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(ns); err == nil {
		t.Errorf("network namespace %s left behind", ns)
	}
}

func mounted(t *testing.T, path string) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

// TestSweepStaleCgroups checks, on the real cgroup filesystem, that a
// machine cgroup left by a killed run is removed, while a fresh one and one
// with a process in it are kept.
func TestSweepStaleCgroups(t *testing.T) {
	hs := cgroupHierarchies()
	if len(hs) == 0 {
		t.Fatal("no cgroup hierarchy found under /sys/fs/cgroup")
	}
	own, err := ownCgroup(hs[0].id)
	if err != nil {
		t.Fatal(err)
	}
	parent := filepath.Join(hs[0].mount, own)
	suffix := defaultName(t.Name())
	stale := filepath.Join(parent, "kopsnode-e2e-stale-"+suffix)
	fresh := filepath.Join(parent, "kopsnode-e2e-fresh-"+suffix)
	busy := filepath.Join(parent, "kopsnode-e2e-busy-"+suffix)
	for _, d := range []string{stale, filepath.Join(stale, "payload"), fresh, busy} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, d := range []string{stale, fresh, busy} {
			removeCgroupTree(d)
		}
	})
	old := time.Now().Add(-2 * time.Minute)
	for _, d := range []string{stale, busy} {
		if err := os.Chtimes(d, old, old); err != nil {
			t.Fatalf("aging %s: %v", d, err)
		}
	}
	sleeper := exec.Command("sleep", "300")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	// Registered after the cgroup removal, so it runs first: a cgroup
	// must be empty to be removed.
	t.Cleanup(func() {
		sleeper.Process.Kill()
		sleeper.Wait()
	})
	if err := os.WriteFile(filepath.Join(busy, "cgroup.procs"), []byte(fmt.Sprint(sleeper.Process.Pid)), 0o644); err != nil {
		t.Fatalf("moving sleep into %s: %v", busy, err)
	}

	sweepStaleCgroups(parent, t.Logf)
	if _, err := os.Stat(stale); err == nil {
		t.Errorf("stale cgroup %s was kept", stale)
	}
	for _, d := range []string{fresh, busy} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("cgroup %s was removed: %v", d, err)
		}
	}
}

// TestNodeTreeRunsUserdataWithCloudInit boots the node tree with a NoCloud
// seed, as a cloud launches a machine with userdata: cloud-init runs the
// script at first boot, and the node tools the agents call are there. A
// blank loop device given to the machine is usable at its chosen path.
func TestNodeTreeRunsUserdataWithCloudInit(t *testing.T) {
	dev := testLoopDevice(t)
	m := Boot(t, Options{
		Tree: NodeTree(t),
		Files: []File{
			{Path: NoCloudSeedDir + "/meta-data", Data: []byte("instance-id: i-test\nlocal-hostname: ignored\n")},
			{Path: NoCloudSeedDir + "/user-data", Data: []byte("#!/bin/sh\necho ran-by-cloud-init > /var/lib/userdata-proof\n")},
		},
		Devices:     []Bind{{Source: dev, Target: "/dev/etcd-test"}},
		BootTimeout: 4 * time.Minute,
	})
	// cloud-final runs the script during boot; Boot waits for boot to end.
	if got, err := m.Exec(context.Background(), "cat", "/var/lib/userdata-proof"); err != nil || got != "ran-by-cloud-init\n" {
		st, _ := m.Exec(context.Background(), "cloud-init", "status", "--long")
		t.Fatalf("userdata proof = %q, %v; cloud-init status:\n%s", got, err, st)
	}
	for _, tool := range []string{"iptables", "conntrack", "mkfs.ext4", "blkid", "modprobe", "mount", "socat"} {
		if _, err := m.Exec(context.Background(), "sh", "-c", "command -v "+tool); err != nil {
			t.Errorf("%s missing from the node tree", tool)
		}
	}
	m.MustExec("mkfs.ext4", "-q", "/dev/etcd-test")
	if got := strings.TrimSpace(m.MustExec("blkid", "-o", "value", "-s", "TYPE", "/dev/etcd-test")); got != "ext4" {
		t.Errorf("filesystem on the machine's device = %q, want ext4", got)
	}
}

func testLoopDevice(t *testing.T) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(f, 64<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", f).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}
