package testtools

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
	"golang.org/x/sys/unix"
)

// Containerd is a real containerd (make tools) started by a test on the host
// as root, with every directory of its own: root and state under
// t.TempDir(), a private socket, a private shim socket directory and runc
// root, and a namespace of its own. Containers run through ctr with the
// built runc and the host's network. In t.Cleanup it kills what still runs,
// stops containerd by its pid, kills leftover shims (found by the private
// socket in their command line), unmounts what containerd mounted and
// removes the namespace's cgroups, so nothing is left on the host.
type Containerd struct {
	// Address is containerd's gRPC socket.
	Address string
	// Namespace is the containerd namespace ctr uses.
	Namespace string

	ctr, runc, runcRoot, fifoDir, socketDir string
	root, state, logPath                    string

	mu   sync.Mutex // guards cmd and done
	cmd  *exec.Cmd
	done chan struct{}
}

// containerdConfig is the part of containerd's config.toml (schema version
// 3, which containerd 2.x reads) that the test sets.
type containerdConfig struct {
	Version         int                       `toml:"version"`
	Root            string                    `toml:"root"`
	State           string                    `toml:"state"`
	Imports         []string                  `toml:"imports"`
	DisabledPlugins []string                  `toml:"disabled_plugins"`
	GRPC            containerdGRPC            `toml:"grpc"`
	Plugins         map[string]map[string]any `toml:"plugins"`
}

type containerdGRPC struct {
	Address string `toml:"address"`
}

// hostPluginsOff are the plugins a bare containerd needs not and that would
// touch host-wide paths (/opt/containerd, /var/run/nri, /etc/cdi, CNI and
// CRI state).
func hostPluginsOff() []string {
	return []string{
		"io.containerd.grpc.v1.cri",
		"io.containerd.cri.v1.images",
		"io.containerd.cri.v1.runtime",
		"io.containerd.podsandbox.controller.v1.podsandbox",
		"io.containerd.nri.v1.nri",
		"io.containerd.internal.v1.opt",
		"io.containerd.image-verifier.v1.bindir",
	}
}

// hostPaths are host-wide directories a containerd with default settings
// writes; the harness must leave them as it found them.
func hostPaths() []string {
	return []string{"/run/containerd", "/var/lib/containerd", "/opt/containerd", "/var/run/nri"}
}

// StartContainerd starts containerd and waits until ctr reaches it. It
// needs root.
func StartContainerd(t testing.TB) *Containerd {
	t.Helper()
	RequireRoot(t)
	bin := ContainerdBin(t, "containerd")
	c := &Containerd{
		ctr:       ContainerdBin(t, "ctr"),
		runc:      RuncBin(t),
		Namespace: "kopsnode-test-" + randomHex(t, 4),
	}
	dir := t.TempDir()
	c.root = filepath.Join(dir, "root")
	c.state = filepath.Join(dir, "state")
	c.runcRoot = filepath.Join(dir, "runc")
	c.fifoDir = filepath.Join(dir, "fifo")
	c.logPath = filepath.Join(dir, "containerd.log")
	c.Address = filepath.Join(dir, "containerd.sock")
	// Shim sockets live in a directory of at most 42 characters (unix
	// socket paths are short): t.TempDir() is too long.
	sd, err := os.MkdirTemp("/tmp", "kn-shim-")
	if err != nil {
		t.Fatalf("containerd: %v", err)
	}
	c.socketDir = sd
	before := existing(hostPaths())
	t.Cleanup(func() {
		c.cleanup(t)
		for _, p := range hostPaths() {
			if _, err := os.Stat(p); err == nil && !before[p] {
				t.Errorf("containerd harness left %s behind on the host", p)
			}
		}
	})

	cfg := containerdConfig{
		Version: 3,
		Root:    c.root,
		State:   c.state,
		// No drop-ins from the host's /etc/containerd/conf.d.
		Imports:         []string{},
		DisabledPlugins: hostPluginsOff(),
		GRPC:            containerdGRPC{Address: c.Address},
		Plugins: map[string]map[string]any{
			"io.containerd.shim.v1.manager": {"socket_dir": c.socketDir},
		},
	}
	b, err := toml.Marshal(cfg)
	if err != nil {
		t.Fatalf("containerd config: %v", err)
	}
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		t.Fatalf("containerd config: %v", err)
	}
	logf, err := os.Create(c.logPath)
	if err != nil {
		t.Fatalf("containerd: %v", err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--config", cfgPath)
	// containerd finds its shim in PATH; the shim is given runc per
	// container (--runc-binary).
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	done := make(chan struct{})
	c.mu.Lock()
	c.cmd, c.done = cmd, done
	c.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		close(done)
	}()

	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Ctr(ctx, "version")
		cancel()
		if err == nil {
			return c
		}
		select {
		case <-done:
			t.Fatalf("containerd exited: %v\n--- containerd log ---\n%s", err, tail(c.Log(), 4000))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd not answering on %s after 30s: %v\n--- containerd log ---\n%s", c.Address, err, tail(c.Log(), 4000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Log returns containerd's output so far, for failure messages.
func (c *Containerd) Log() string {
	b, _ := os.ReadFile(c.logPath)
	return string(b)
}

// Ctr runs ctr against this containerd and namespace and returns its
// standard output (a container's, for tasks start); the error carries the
// standard error, where ctr also logs warnings.
func (c *Containerd) Ctr(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"--address", c.Address, "--namespace", c.Namespace}, args...)
	cmd := exec.CommandContext(ctx, c.ctr, full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("ctr %s: %w: %s%s", strings.Join(args, " "), err, out.String(), strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// ImportImage imports an image tarball of make tools (pause, coredns,
// testapp) and returns its reference.
func (c *Containerd) ImportImage(t testing.TB, name string) string {
	t.Helper()
	tarball := ImageTar(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := c.Ctr(ctx, "images", "import", tarball); err != nil {
		t.Fatalf("importing %s: %v\n%s", tarball, err, out)
	}
	return ImageRef(t, name)
}

// create makes a container of image with the host's network and the built
// runc, running args (the image's entrypoint when empty).
func (c *Containerd) create(ctx context.Context, image, id string, args []string) error {
	a := []string{"containers", "create", "--net-host", "--runc-binary", c.runc, "--runc-root", c.runcRoot, image, id}
	_, err := c.Ctr(ctx, append(a, args...)...)
	return err
}

// Run runs a container of image to completion and returns its output; the
// error says the exit status. The container is removed afterwards.
func (c *Containerd) Run(ctx context.Context, image, id string, args ...string) (string, error) {
	if err := c.create(ctx, image, id, args); err != nil {
		return "", err
	}
	// ctr keeps the task's stdio FIFOs under --fifo-dir (by default a
	// host-wide /run/containerd/fifo).
	out, err := c.Ctr(ctx, "tasks", "start", "--fifo-dir", c.fifoDir, id)
	if _, rmErr := c.Ctr(context.Background(), "containers", "delete", id); rmErr != nil && err == nil {
		err = rmErr
	}
	return out, err
}

// Start starts a container of image in the background, without stdio; stop
// it with Stop.
func (c *Containerd) Start(ctx context.Context, image, id string, args ...string) error {
	if err := c.create(ctx, image, id, args); err != nil {
		return err
	}
	if _, err := c.Ctr(ctx, "tasks", "start", "--detach", "--null-io", id); err != nil {
		_, _ = c.Ctr(context.Background(), "containers", "delete", id)
		return err
	}
	return nil
}

// Stop sends SIGTERM to a container started with Start and waits up to
// timeout for its task to stop; then it removes the task and the
// container. It returns an error when the task did not stop in time (it is
// killed and removed all the same).
func (c *Containerd) Stop(ctx context.Context, id string, timeout time.Duration) error {
	var stopErr error
	if _, err := c.Ctr(ctx, "tasks", "kill", "--signal", "SIGTERM", id); err != nil {
		stopErr = err
	} else if err := c.waitStopped(ctx, id, timeout); err != nil {
		stopErr = err
		_, _ = c.Ctr(ctx, "tasks", "kill", "--signal", "SIGKILL", id)
		_ = c.waitStopped(ctx, id, 10*time.Second)
	}
	if _, err := c.Ctr(ctx, "tasks", "delete", id); err != nil && stopErr == nil {
		stopErr = err
	}
	if _, err := c.Ctr(ctx, "containers", "delete", id); err != nil && stopErr == nil {
		stopErr = err
	}
	return stopErr
}

// TaskStatus returns a task's status as ctr lists it (RUNNING, STOPPED),
// or "" when there is no such task.
func (c *Containerd) TaskStatus(ctx context.Context, id string) (string, error) {
	out, err := c.Ctr(ctx, "tasks", "list")
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == id {
			return f[2], nil
		}
	}
	return "", nil
}

func (c *Containerd) waitStopped(ctx context.Context, id string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := c.TaskStatus(ctx, id)
		if err != nil {
			return err
		}
		if st == "STOPPED" || st == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("task %s still %s %s after SIGTERM", id, st, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cleanup undoes everything the harness made on the host, in order: the
// containers (so their shims exit), containerd, shims that did not exit,
// mounts, cgroups, directories outside t.TempDir().
func (c *Containerd) cleanup(t testing.TB) {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if out, err := c.Ctr(ctx, "tasks", "list", "--quiet"); err == nil {
			for _, id := range strings.Fields(out) {
				_, _ = c.Ctr(ctx, "tasks", "kill", "--signal", "SIGKILL", id)
				_ = c.waitStopped(ctx, id, 10*time.Second)
				_, _ = c.Ctr(ctx, "tasks", "delete", id)
			}
		}
		if out, err := c.Ctr(ctx, "containers", "list", "--quiet"); err == nil {
			for _, id := range strings.Fields(out) {
				_, _ = c.Ctr(ctx, "containers", "delete", id)
			}
		}
		cancel()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			killAndWait(cmd, done)
		}
	}
	for _, pid := range pidsWithArg(c.Address) {
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
		}
	}
	for _, m := range mountsUnder(c.root, c.state, c.runcRoot, c.socketDir) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Errorf("containerd cleanup: unmounting %s: %v", m, err)
		}
	}
	for _, d := range cgroupDirs(c.Namespace) {
		if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
			t.Errorf("containerd cleanup: removing cgroup %s: %v", d, err)
		}
	}
	if err := os.RemoveAll(c.socketDir); err != nil {
		t.Errorf("containerd cleanup: %v", err)
	}
	if pids := pidsWithArg(c.Address); len(pids) > 0 {
		t.Errorf("containerd cleanup: processes %v still use %s", pids, c.Address)
	}
	if ms := mountsUnder(c.root, c.state, c.runcRoot); len(ms) > 0 {
		t.Errorf("containerd cleanup: still mounted: %v", ms)
	}
	if ds := cgroupDirs(c.Namespace); len(ds) > 0 {
		t.Errorf("containerd cleanup: cgroups left: %v", ds)
	}
}

// existing says which of paths exist now.
func existing(paths []string) map[string]bool {
	m := map[string]bool{}
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			m[p] = true
		}
	}
	return m
}

// pidsWithArg returns the processes with arg as one of their command-line
// arguments (a shim gets -address <containerd socket>).
func pidsWithArg(arg string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, a := range bytes.Split(b, []byte{0}) {
			if string(a) == arg {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// mountsUnder returns the mount points under any of dirs, deepest first.
func mountsUnder(dirs ...string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var ms []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		for _, d := range dirs {
			if mp == d || strings.HasPrefix(mp, d+"/") {
				ms = append(ms, mp)
				break
			}
		}
	}
	sort.Slice(ms, func(i, j int) bool { return len(ms[i]) > len(ms[j]) })
	return ms
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cgroupDirs returns the cgroup directories named name at the top of every
// cgroup hierarchy (ctr puts a container in /<namespace>/<id>), with their
// subdirectories, deepest first, so they can be removed in order.
func cgroupDirs(name string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var dirs []string
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 1 || (qf[0] != "cgroup" && qf[0] != "cgroup2") {
			continue
		}
		top := filepath.Join(unescapeMount(pf[4]), name)
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	return dirs
}
