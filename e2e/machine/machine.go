// Package machine boots throwaway machines with systemd as PID 1 for
// end-to-end tests: a cached Debian tree (BaseTree), an overlay per machine,
// systemd-nspawn to boot it, and nsenter to run commands inside. Every
// machine is powered off, its mounts, cgroups and network namespace removed
// in t.Cleanup, also when the test fails.
package machine

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Default timeouts.
const (
	DefaultBootTimeout = 2 * time.Minute
	DefaultStopTimeout = time.Minute
)

// HoldEnv, when set to a Go duration, keeps a machine of a failed test
// running that long before it is powered off, so one can nsenter into it
// (the command is logged).
const HoldEnv = "KOPSNODE_E2E_HOLD"

// sigRTMIN is glibc's SIGRTMIN, the base systemd counts its signals from:
// SIGRTMIN+4 asks systemd for a poweroff.
const sigRTMIN = 34

// innerPath is the PATH of commands run inside a machine.
const innerPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// File is written into a machine's tree before it boots.
type File struct {
	// Path is absolute inside the machine.
	Path string
	Data []byte
	// Mode defaults to 0644.
	Mode fs.FileMode
}

// Bind makes a host path visible inside the machine.
type Bind struct {
	Source   string // on the host
	Target   string // inside the machine; defaults to Source
	ReadOnly bool
}

// Options configure a machine.
type Options struct {
	// Name is the machine and host name; defaults to one derived from the
	// test name. It must be unique among running machines.
	Name string
	// Files are written into the tree before boot.
	Files []File
	// Binds are bind mounts from the host.
	Binds []Bind
	// PrivateNetwork gives the machine its own network namespace with only
	// a loopback interface. Listen opens sockets inside it. Without it the
	// machine shares the host's network namespace.
	PrivateNetwork bool
	// Tree is the read-only tree the machine boots on (an overlay is
	// mounted over it); defaults to BaseTree. NodeTree is the other one.
	Tree string
	// NetNSPath joins an existing network namespace (for example a host of
	// a pkg/testtools/netns network) instead; the machine does not remove
	// it. Exclusive with PrivateNetwork.
	NetNSPath string
	// Env is added to systemd-nspawn's environment, for example
	// SYSTEMD_NSPAWN_API_VFS_WRITABLE=network.
	Env []string
	// Devices are host block devices (loop devices) the machine may use,
	// bound at Target (default: the same path).
	Devices []Bind
	// BootTimeout bounds the wait for systemd to finish booting.
	BootTimeout time.Duration
	// ExtraArgs are passed to systemd-nspawn before --boot.
	ExtraArgs []string
	// BeforeBoot, when set, is called with the machine's root directory
	// (as seen from the host) after Files are written and before the
	// machine boots: for example to bake an image into it.
	BeforeBoot func(root string) error
}

// Machine is a booted machine. It is stopped by t.Cleanup; Stop may be
// called earlier.
type Machine struct {
	t        testing.TB
	name     string
	dir      string // scratch directory of this machine
	root     string // the merged tree the machine runs on
	console  string // file receiving the machine's console
	netns    string // path of the network namespace, or ""
	netnsNm  string // its name under /run/netns
	cgroups  []string
	mounted  bool
	cmd      *exec.Cmd
	done     chan struct{} // closed when systemd-nspawn has exited
	waitErr  error         // set before done is closed
	initPID  int
	pidNS    string // e.g. "pid:[4026532181]"
	opts     Options
	stopOnce sync.Once
	stopErr  error
	stopped  bool
}

// Boot boots a machine from the base tree and waits until systemd reports
// the system running (or degraded, whose failed units are logged). It fails
// the test when the machine does not come up.
func Boot(t testing.TB, opts Options) *Machine {
	t.Helper()
	base := opts.Tree
	if base == "" {
		base = BaseTree(t)
	}
	if err := ensureHostDBus(t.Logf); err != nil {
		t.Fatalf("host D-Bus for systemd-nspawn: %v", err)
	}
	if _, err := exec.LookPath("systemd-nspawn"); err != nil {
		t.Fatalf("systemd-nspawn not found: install the Debian package systemd-container")
	}
	if opts.Name == "" {
		opts.Name = defaultName(t.Name())
	}
	if opts.BootTimeout == 0 {
		opts.BootTimeout = DefaultBootTimeout
	}
	m := &Machine{t: t, name: opts.Name, dir: t.TempDir(), opts: opts}
	// Registered after TempDir, so it runs before the directory is removed.
	t.Cleanup(func() {
		if err := m.Stop(); err != nil {
			t.Errorf("stopping machine %s: %v", m.name, err)
		}
	})
	if err := m.prepare(base, opts); err != nil {
		t.Fatalf("preparing machine %s: %v", m.name, err)
	}
	if err := m.boot(); err != nil {
		t.Fatalf("%v", err)
	}
	return m
}

// boot starts systemd-nspawn and waits until the machine is up.
func (m *Machine) boot() error {
	if err := m.start(m.opts); err != nil {
		return fmt.Errorf("starting machine %s: %w", m.name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.opts.BootTimeout)
	defer cancel()
	if err := m.waitBooted(ctx); err != nil {
		return fmt.Errorf("booting machine %s: %w\nconsole:\n%s", m.name, err, m.consoleTail(6000))
	}
	m.t.Logf("machine %s booted: init pid %d; debug with: nsenter -t %d -m -u -i -n -p -C -- bash", m.name, m.initPID, m.initPID)
	return nil
}

// Reboot powers the machine off and boots it again on the same tree, as a
// node reboots: files stay, processes and /run do not, and the units
// enabled for boot start. It fails the test when the machine does not
// come back.
func (m *Machine) Reboot() {
	m.t.Helper()
	m.PowerOff()
	m.PowerOn()
}

// PowerOff shuts the machine down (systemd's poweroff) and leaves it off:
// its tree stays for PowerOn. It fails the test when a process survives.
func (m *Machine) PowerOff() {
	m.t.Helper()
	if m.stopped {
		m.t.Fatalf("PowerOff of machine %s after Stop", m.name)
	}
	if err := m.powerOff(); err != nil {
		m.t.Fatalf("powering off machine %s: %v", m.name, err)
	}
	if left := processesInNamespace(m.pidNS); len(left) > 0 {
		m.t.Fatalf("powering off machine %s: processes %v survived the poweroff", m.name, left)
	}
	m.initPID, m.pidNS = 0, ""
}

// PowerOn boots a machine that PowerOff stopped, on the same tree and with
// fresh cgroups, as a machine powered on again.
func (m *Machine) PowerOn() {
	m.t.Helper()
	if m.stopped || m.initPID != 0 {
		m.t.Fatalf("PowerOn of machine %s that is running or stopped for good", m.name)
	}
	for _, c := range m.cgroups {
		if err := removeCgroupTree(c); err != nil {
			m.t.Fatalf("powering on machine %s: %v", m.name, err)
		}
		if err := os.Mkdir(c, 0o755); err != nil {
			m.t.Fatalf("powering on machine %s: creating cgroup %s: %v", m.name, c, err)
		}
		if err := inheritCpuset(filepath.Dir(c), c); err != nil {
			m.t.Fatalf("powering on machine %s: %v", m.name, err)
		}
	}
	if err := m.boot(); err != nil {
		m.t.Fatalf("powering on: %v", err)
	}
}

// Name is the machine's name and host name.
func (m *Machine) Name() string { return m.name }

// Root is the machine's root directory as seen from the host.
func (m *Machine) Root() string { return m.root }

// InitPID is the host pid of the machine's systemd.
func (m *Machine) InitPID() int { return m.initPID }

// NetNSPath is the machine's network namespace, or "" when it shares the host's.
func (m *Machine) NetNSPath() string { return m.netns }

// HostPath maps a path inside the machine to the host.
func (m *Machine) HostPath(p string) string { return filepath.Join(m.root, p) }

// ConsoleLog returns what the machine wrote to its console so far.
func (m *Machine) ConsoleLog() string {
	b, _ := os.ReadFile(m.console)
	return string(b)
}

func (m *Machine) prepare(base string, opts Options) error {
	if !validName.MatchString(m.name) {
		return fmt.Errorf("machine name %q: want letters, digits and dashes, at most 48", m.name)
	}
	upper := filepath.Join(m.dir, "upper")
	work := filepath.Join(m.dir, "work")
	m.root = filepath.Join(m.dir, "root")
	m.console = filepath.Join(m.dir, "console.log")
	for _, d := range []string{upper, work, m.root} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	for _, p := range []string{base, upper, work} {
		if strings.ContainsAny(p, ",:") {
			return fmt.Errorf("overlay path %q contains ',' or ':'; set TOOLS_DIR/TMPDIR to a plainer path", p)
		}
	}
	data := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", base, upper, work)
	if err := syscall.Mount("overlay", m.root, "overlay", 0, data); err != nil {
		// Some hosts cannot stack overlays (TMPDIR on overlayfs): copy instead.
		m.t.Logf("overlay mount failed (%v); copying the base tree", err)
		out, cerr := exec.Command("cp", "-a", "--reflink=auto", base+"/.", m.root).CombinedOutput()
		if cerr != nil {
			return fmt.Errorf("copying %s: %v: %s", base, cerr, out)
		}
	} else {
		m.mounted = true
	}
	files := append([]File{{Path: "/etc/hostname", Data: []byte(m.name + "\n")}}, opts.Files...)
	for _, f := range files {
		if err := m.WriteFile(f.Path, f.Data, f.Mode); err != nil {
			return err
		}
	}
	for _, b := range opts.Binds {
		target := b.Target
		if target == "" {
			target = b.Source
		}
		// nspawn creates missing targets, but not inside read-only parents.
		if fi, err := os.Stat(b.Source); err == nil && fi.IsDir() {
			os.MkdirAll(m.HostPath(target), 0o755)
		}
	}
	if opts.BeforeBoot != nil {
		if err := opts.BeforeBoot(m.root); err != nil {
			return fmt.Errorf("before boot: %w", err)
		}
	}
	if opts.PrivateNetwork && opts.NetNSPath != "" {
		return fmt.Errorf("PrivateNetwork and NetNSPath are exclusive")
	}
	if opts.PrivateNetwork {
		if err := m.makeNetNS(); err != nil {
			return err
		}
	}
	if opts.NetNSPath != "" {
		m.netns = opts.NetNSPath
	}
	return m.makeCgroups()
}

// WriteFile writes a file into the machine's tree, creating parent
// directories. It works before boot and while the machine runs (the
// overlay is shared with it).
func (m *Machine) WriteFile(path string, data []byte, mode fs.FileMode) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("file %q: path inside the machine must be absolute", path)
	}
	if mode == 0 {
		mode = 0o644
	}
	hp := m.HostPath(path)
	if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
		return fmt.Errorf("creating directory for %s: %w", path, err)
	}
	if err := writeFileAtomic(hp, data, mode); err != nil {
		return fmt.Errorf("writing %s into machine: %w", path, err)
	}
	return nil
}

var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9-]{0,47}$`)

func defaultName(testName string) string {
	s := regexp.MustCompile(`[^a-zA-Z0-9]+`).ReplaceAllString(testName, "-")
	s = strings.Trim(strings.ToLower(s), "-")
	if len(s) > 30 {
		s = s[:30]
	}
	var b [3]byte
	rand.Read(b[:])
	return strings.Trim(s, "-") + "-" + hex.EncodeToString(b[:])
}

func (m *Machine) makeNetNS() error {
	m.netnsNm = "kn-" + m.name
	if len(m.netnsNm) > 60 {
		m.netnsNm = m.netnsNm[:60]
	}
	if out, err := exec.Command("ip", "netns", "add", m.netnsNm).CombinedOutput(); err != nil {
		m.netnsNm = ""
		return fmt.Errorf("ip netns add: %v: %s", err, out)
	}
	m.netns = filepath.Join("/run/netns", m.netnsNm)
	if out, err := exec.Command("ip", "-n", m.netnsNm, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("bringing lo up in %s: %v: %s", m.netnsNm, err, out)
	}
	return nil
}

// makeCgroups gives the machine cgroups of its own, so that machines booted
// at the same time do not share systemd-nspawn's "payload" cgroup.
func (m *Machine) makeCgroups() error {
	for _, h := range cgroupHierarchies() {
		own, err := ownCgroup(h.id)
		if err != nil {
			return err
		}
		parent := filepath.Join(h.mount, own)
		sweepStaleCgroups(parent, m.t.Logf)
		d := filepath.Join(parent, "kopsnode-e2e-"+m.name)
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("creating cgroup %s: %w", d, err)
		}
		m.cgroups = append(m.cgroups, d)
		if err := inheritCpuset(parent, d); err != nil {
			return err
		}
	}
	return nil
}

type hierarchy struct {
	mount string
	id    string // "0::" for v2, "name=systemd" for the v1 systemd hierarchy
}

// inheritCpuset gives a new v1 cpuset cgroup its parent's CPUs and memory
// nodes: a v1 cpuset starts empty, and no process can join it until both
// are set.
func inheritCpuset(parent, d string) error {
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		b, err := os.ReadFile(filepath.Join(parent, f))
		if err != nil {
			continue // not a cpuset hierarchy
		}
		if err := os.WriteFile(filepath.Join(d, f), b, 0o644); err != nil {
			return fmt.Errorf("setting %s of %s: %w", f, d, err)
		}
	}
	return nil
}

func cgroupHierarchies() []hierarchy {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return []hierarchy{{"/sys/fs/cgroup", ""}}
	}
	var hs []hierarchy
	if _, err := os.Stat("/sys/fs/cgroup/systemd/cgroup.procs"); err == nil {
		hs = append(hs, hierarchy{"/sys/fs/cgroup/systemd", "name=systemd"})
	}
	if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.procs"); err == nil {
		hs = append(hs, hierarchy{"/sys/fs/cgroup/unified", ""})
	}
	// Every v1 controller too: a kubelet in the machine creates its pod
	// cgroups in each one, under the machine's own cgroup (nspawn gives it
	// a cgroup namespace), not at the host's root where two machines'
	// kubelets would share them and they would outlive the test.
	data, _ := os.ReadFile("/proc/self/cgroup")
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || parts[1] == "" || strings.HasPrefix(parts[1], "name=") {
			continue
		}
		mount := filepath.Join("/sys/fs/cgroup", parts[1])
		if _, err := os.Stat(filepath.Join(mount, "cgroup.procs")); err == nil {
			hs = append(hs, hierarchy{mount, parts[1]})
		}
	}
	return hs
}

// ownCgroup returns this process's cgroup path in a hierarchy
// ("" = the v2 one, or a v1 controller list such as "name=systemd").
func ownCgroup(id string) (string, error) {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && parts[1] == id {
			return parts[2], nil
		}
	}
	return "", fmt.Errorf("no cgroup %q in /proc/self/cgroup", id)
}

func (m *Machine) start(opts Options) error {
	console, err := os.OpenFile(m.console, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer console.Close()
	args := []string{
		"--quiet", "--register=no", "--keep-unit",
		"--machine=" + m.name, "--directory=" + m.root,
		"--capability=all", "--console=read-only",
	}
	if m.netns != "" {
		args = append(args, "--network-namespace-path="+m.netns)
	}
	for _, b := range opts.Binds {
		flag := "--bind="
		if b.ReadOnly {
			flag = "--bind-ro="
		}
		spec := b.Source
		if b.Target != "" && b.Target != b.Source {
			spec += ":" + b.Target
		}
		args = append(args, flag+spec)
	}
	for _, d := range opts.Devices {
		spec := d.Source
		if d.Target != "" && d.Target != d.Source {
			spec += ":" + d.Target
		}
		args = append(args, "--bind="+spec, "--property=DeviceAllow="+d.Source+" rwm")
	}
	args = append(args, opts.ExtraArgs...)
	args = append(args, "--boot")
	// The shell moves itself into the machine's cgroups and then becomes
	// systemd-nspawn, keeping its pid.
	script := `for c in $KN_CGROUPS; do echo $$ > "$c/cgroup.procs" || exit 97; done; unset KN_CGROUPS; exec systemd-nspawn "$@"`
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, "sh"}, args...)...)
	cmd.Env = append(append(os.Environ(), "KN_CGROUPS="+strings.Join(m.cgroups, " "), "SYSTEMD_LOG_COLOR=0"), opts.Env...)
	cmd.Stdout = console
	cmd.Stderr = console
	// If the test binary dies without cleaning up, nspawn is told to end
	// and powers the machine off.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	m.t.Logf("starting systemd-nspawn %s", strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting systemd-nspawn: %w", err)
	}
	done := make(chan struct{})
	m.cmd, m.done = cmd, done
	// One waiter per run; waitErr is read only after done is closed.
	go func() {
		m.waitErr = cmd.Wait()
		close(done)
	}()
	return nil
}

// waitBooted finds the machine's init and waits for systemd to finish boot.
func (m *Machine) waitBooted(ctx context.Context) error {
	pid, err := m.findInit(ctx)
	if err != nil {
		return err
	}
	m.initPID = pid
	if m.pidNS, err = os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err != nil {
		return fmt.Errorf("reading pid namespace of init %d: %w", pid, err)
	}
	var last string
	for {
		out, _ := m.Exec(ctx, "systemctl", "is-system-running")
		last = strings.TrimSpace(out)
		switch last {
		case "running":
			return nil
		case "degraded":
			failed, _ := m.Exec(ctx, "systemctl", "--failed", "--no-legend", "--plain")
			m.t.Logf("machine %s is degraded; failed units:\n%s", m.name, failed)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("systemctl is-system-running still says %q: %w", last, ctx.Err())
		case <-m.done:
			return fmt.Errorf("systemd-nspawn exited during boot: %v", m.waitErr)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// findInit polls for the child of systemd-nspawn that is pid 1 of its own
// pid namespace.
func (m *Machine) findInit(ctx context.Context) (int, error) {
	parent := m.cmd.Process.Pid
	for {
		if pid, ok := initChild(parent); ok {
			return pid, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("no init process appeared under systemd-nspawn (pid %d): %w", parent, ctx.Err())
		case <-m.done:
			return 0, fmt.Errorf("systemd-nspawn exited before the machine started: %v", m.waitErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func initChild(parent int) (int, bool) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, false
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st := procStatus(pid)
		if st["PPid"] != strconv.Itoa(parent) {
			continue
		}
		ns := strings.Fields(st["NSpid"])
		if len(ns) >= 2 && ns[len(ns)-1] == "1" {
			return pid, true
		}
	}
	return 0, false
}

func procStatus(pid int) map[string]string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil
	}
	defer f.Close()
	st := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok {
			st[k] = strings.TrimSpace(v)
		}
	}
	return st
}

// Command returns a command that runs inside the machine, in all its
// namespaces, with a plain environment. The caller may set Stdin, Stdout,
// Stderr and add to Env.
func (m *Machine) Command(ctx context.Context, args ...string) *exec.Cmd {
	nsArgs := []string{"-t", strconv.Itoa(m.initPID), "-m", "-u", "-i", "-n", "-p", "-C", "--"}
	cmd := exec.CommandContext(ctx, "nsenter", append(nsArgs, args...)...)
	cmd.Env = []string{"PATH=" + innerPath, "HOME=/root", "LANG=C.UTF-8", "TERM=dumb", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}
	return cmd
}

// ExecError is a command inside the machine that failed.
type ExecError struct {
	Args   []string
	Stderr string
	Err    error
}

func (e *ExecError) Error() string {
	return fmt.Sprintf("running %q in machine: %v: %s", strings.Join(e.Args, " "), e.Err, strings.TrimSpace(e.Stderr))
}

func (e *ExecError) Unwrap() error { return e.Err }

// ExitCode returns the command's exit status, or -1 when it did not exit.
func (e *ExecError) ExitCode() int {
	var ee *exec.ExitError
	if errors.As(e.Err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// Exec runs a command inside the machine and returns its standard output;
// a failure is an *ExecError with the standard error.
func (m *Machine) Exec(ctx context.Context, args ...string) (string, error) {
	if m.initPID == 0 {
		return "", fmt.Errorf("machine %s is not running", m.name)
	}
	cmd := m.Command(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), &ExecError{Args: args, Stderr: stderr.String(), Err: err}
	}
	return stdout.String(), nil
}

// MustExec runs a command inside the machine with a one-minute deadline and
// fails the test when it fails.
func (m *Machine) MustExec(args ...string) string {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := m.Exec(ctx, args...)
	if err != nil {
		m.t.Fatalf("%v", err)
	}
	return out
}

// Stop powers the machine off, waits for systemd-nspawn to exit, checks
// that no process of the machine is left, and removes its mounts, cgroups
// and network namespace. It is safe to call more than once.
func (m *Machine) Stop() error {
	m.stopOnce.Do(func() { m.stopErr = m.stop() })
	return m.stopErr
}

func (m *Machine) stop() error {
	m.stopped = true
	var errs []error
	if m.cmd != nil && m.cmd.Process != nil {
		if m.t.Failed() && m.initPID != 0 {
			m.logForDebugging()
		}
		if err := m.powerOff(); err != nil {
			errs = append(errs, err)
		}
		if m.pidNS != "" {
			if left := processesInNamespace(m.pidNS); len(left) > 0 {
				errs = append(errs, fmt.Errorf("processes %v of the machine are still running", left))
			}
		}
		// The pid may be reused by an unrelated process from now on.
		m.initPID = 0
	}
	if m.mounted {
		if err := syscall.Unmount(m.root, 0); err != nil {
			if err2 := syscall.Unmount(m.root, syscall.MNT_DETACH); err2 != nil {
				errs = append(errs, fmt.Errorf("unmounting %s: %v", m.root, err))
			}
		}
		m.mounted = false
	}
	for i := len(m.cgroups) - 1; i >= 0; i-- {
		if err := removeCgroupTree(m.cgroups[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if m.netnsNm != "" {
		if out, err := exec.Command("ip", "netns", "del", m.netnsNm).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del %s: %v: %s", m.netnsNm, err, out))
		}
	}
	// nspawn leaves this behind when /run is not a tmpfs.
	os.RemoveAll(filepath.Join("/run/systemd/nspawn/propagate", m.name))
	return errors.Join(errs...)
}

// powerOff asks systemd to power off, then kills the machine if it does
// not go within the deadline.
func (m *Machine) powerOff() error {
	select {
	case <-m.done:
		return nil
	default:
	}
	if m.initPID != 0 {
		syscall.Kill(m.initPID, syscall.Signal(sigRTMIN+4))
	} else {
		m.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-m.done:
		return nil
	case <-time.After(DefaultStopTimeout):
	}
	m.t.Logf("machine %s did not power off within %s; killing it", m.name, DefaultStopTimeout)
	if m.initPID != 0 {
		// Killing pid 1 of a pid namespace kills every process in it.
		syscall.Kill(m.initPID, syscall.SIGKILL)
	}
	select {
	case <-m.done:
		return fmt.Errorf("machine %s had to be killed", m.name)
	case <-time.After(10 * time.Second):
	}
	m.cmd.Process.Kill()
	<-m.done
	return fmt.Errorf("machine %s: systemd-nspawn (pid %d) had to be killed", m.name, m.cmd.Process.Pid)
}

func (m *Machine) logForDebugging() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := m.Exec(ctx, "journalctl", "--no-pager", "-n", "150", "-o", "short-monotonic"); err == nil {
		m.t.Logf("journal of machine %s (last 150 lines):\n%s", m.name, out)
	}
	if d, err := time.ParseDuration(os.Getenv(HoldEnv)); err == nil && d > 0 {
		m.t.Logf("%s=%s: holding machine %s; enter it with: nsenter -t %d -m -u -i -n -p -C -- bash", HoldEnv, d, m.name, m.initPID)
		select {
		case <-time.After(d):
		case <-m.done:
		}
	}
}

func (m *Machine) consoleTail(n int) string {
	b, _ := os.ReadFile(m.console)
	return tail(b, n)
}

// processesInNamespace lists the host pids of processes in a pid namespace.
func processesInNamespace(ns string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err == nil && l == ns {
			pids = append(pids, pid)
		}
	}
	return pids
}

// sweepStaleCgroups removes machine cgroups left by test binaries that
// were killed before their cleanup ran: those without any process in them
// and older than a minute (a younger one may be about to receive its
// systemd-nspawn).
func sweepStaleCgroups(parent string, logf func(string, ...any)) {
	dirs, _ := filepath.Glob(filepath.Join(parent, "kopsnode-e2e-*"))
	for _, d := range dirs {
		fi, err := os.Stat(d)
		if err != nil || time.Since(fi.ModTime()) < time.Minute || cgroupHasProcesses(d) {
			continue
		}
		if err := removeCgroupTree(d); err == nil {
			logf("removed stale cgroup %s", d)
		}
	}
}

func cgroupHasProcesses(dir string) bool {
	found := false
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || found || !d.IsDir() {
			return nil
		}
		if b, err := os.ReadFile(filepath.Join(p, "cgroup.procs")); err != nil || len(strings.TrimSpace(string(b))) > 0 {
			found = true // unreadable counts as in use
		}
		return nil
	})
	return found
}

// removeCgroupTree removes a cgroup and its children, deepest first.
func removeCgroupTree(dir string) error {
	var dirs []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing cgroup %s: %w", dirs[i], err)
		}
	}
	return nil
}

// ensureHostDBus starts a system D-Bus on the host when none runs:
// systemd-nspawn needs one even with --register=no.
func ensureHostDBus(logf func(string, ...any)) error {
	const sock = "/run/dbus/system_bus_socket"
	if _, err := os.Stat(sock); err == nil {
		return nil
	}
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		return fmt.Errorf("no system bus at %s and no dbus-daemon: install the Debian package dbus", sock)
	}
	if err := os.MkdirAll("/run/dbus", 0o755); err != nil {
		return err
	}
	// A concurrent test binary may be starting one too; the loser fails to
	// bind and we only need the socket to exist.
	out, err := exec.Command("dbus-daemon", "--system", "--fork").CombinedOutput()
	if _, serr := os.Stat(sock); serr == nil {
		logf("started a system D-Bus on the host for systemd-nspawn (it keeps running)")
		return nil
	}
	return fmt.Errorf("starting dbus-daemon --system: %v: %s", err, out)
}
