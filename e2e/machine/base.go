package machine

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kopsnode/agents/pkg/testtools"
)

// Suite is the Debian release the base tree is built from.
const Suite = "bookworm"

// Packages are installed into the base tree on top of the minbase variant.
// Changing the list changes the cache key, so a new tree is built.
var basePackages = []string{
	"ca-certificates",
	"curl",
	"dbus",
	"iproute2",
	"procps",
	"systemd",
	"systemd-sysv",
}

// treeFormat is bumped whenever customizeTree changes what it writes, so
// that cached trees made by an older harness are not reused.
const treeFormat = "2"

// MirrorEnv overrides the Debian mirror debootstrap downloads from; by
// default it is the first mirror of the host's apt sources that carries the
// suite.
const MirrorEnv = "KOPSNODE_E2E_MIRROR"

// buildTimeout bounds one debootstrap run: about 40 s for the base tree on
// a quiet machine and a warm mirror, but the node tree (cloud-init brings
// python) took over 15 minutes while other builds loaded both cores.
const buildTimeout = 30 * time.Minute

// BaseTree returns the path of a Debian minbase tree with systemd, built once
// with debootstrap and cached under $TOOLS_DIR/debootstrap. Concurrent test
// binaries serialise on a lock file; the tree is built in a temporary
// directory and renamed into place, and a stamp file written last marks it
// complete. The tree must be treated as read-only: Boot mounts an overlay on
// top of it.
func BaseTree(t testing.TB) string {
	t.Helper()
	return flavorTree(t, baseFlavor)
}

// NodeTree is BaseTree plus what a Kubernetes node's image carries
// (iptables, conntrack, mount and filesystem tools, socat) and cloud-init
// set to read its userdata from the NoCloud seed directory, as a node
// launched with userdata would.
func NodeTree(t testing.TB) string {
	t.Helper()
	return flavorTree(t, nodeFlavor)
}

// treeFlavor is one kind of cached tree.
type treeFlavor struct {
	packages  []string
	customize func(dir string) error
}

var (
	baseFlavor = treeFlavor{packages: basePackages}
	nodeFlavor = treeFlavor{
		packages: append(append([]string(nil), basePackages...),
			"cloud-init", "conntrack", "python3-cffi-backend", "e2fsprogs", "ethtool", "iptables", "kmod", "mount", "socat", "util-linux"),
		customize: customizeNodeTree,
	}
)

// NoCloudSeedDir is where cloud-init's NoCloud datasource reads meta-data
// and user-data in a NodeTree machine.
const NoCloudSeedDir = "/var/lib/cloud/seed/nocloud"

func customizeNodeTree(dir string) error {
	cfg := filepath.Join(dir, "etc/cloud/cloud.cfg.d/90-kopsnode-e2e.cfg")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o755); err != nil {
		return err
	}
	// Only the seed directory: no network datasource is probed.
	return os.WriteFile(cfg, []byte("datasource_list: [ NoCloud, None ]\n"), 0o644)
}

func flavorTree(t testing.TB, f treeFlavor) string {
	t.Helper()
	testtools.RequireRoot(t)
	// Waiting for another builder counts against the same bound.
	ctx, cancel := context.WithTimeout(context.Background(), 2*buildTimeout)
	defer cancel()
	dir, err := f.ensure(ctx, t.Logf)
	if err != nil {
		t.Fatalf("base tree: %v", err)
	}
	return dir
}

// BuildTrees builds the base and node trees into the tools cache unless
// they are there (what BaseTree and NodeTree do on first use), so that a
// cold CI run can build them beside its compiles (tools/basetrees). Needs
// root and debootstrap.
func BuildTrees(ctx context.Context, logf func(string, ...any)) error {
	for _, f := range []treeFlavor{baseFlavor, nodeFlavor} {
		if _, err := f.ensure(ctx, logf); err != nil {
			return fmt.Errorf("tree of %d packages: %w", len(f.packages), err)
		}
	}
	return nil
}

// ensure returns the path of the flavor's cached tree, building it first
// unless it is there.
func (f treeFlavor) ensure(ctx context.Context, logf func(string, ...any)) (string, error) {
	build := func(ctx context.Context, dir string, logf func(string, ...any)) error {
		return buildTree(ctx, dir, f, logf)
	}
	return ensureBaseTree(ctx, filepath.Join(testtools.Dir(), "debootstrap"), treeKey(f.packages), build, logf)
}

// treeKey names a cached tree by what goes into it.
func treeKey(packages []string) string {
	pkgs := append([]string(nil), packages...)
	sort.Strings(pkgs)
	h := sha256.Sum256([]byte(strings.Join([]string{Suite, "minbase", treeFormat, strings.Join(pkgs, ",")}, "\n")))
	return Suite + "-" + hex.EncodeToString(h[:])[:12]
}

// buildTree runs debootstrap into dir and prepares the result for
// booting many copies.
func buildTree(ctx context.Context, dir string, f treeFlavor, logf func(string, ...any)) error {
	mirror := os.Getenv(MirrorEnv)
	if mirror == "" {
		mirror = hostMirror(Suite)
	}
	logf("building a tree of %d packages with debootstrap (mirror %q), this takes a minute or two once", len(f.packages), mirror)
	if err := debootstrap(ctx, dir, mirror, f.packages); err != nil {
		return err
	}
	if err := customizeTree(dir); err != nil {
		return fmt.Errorf("customizing %s: %w", dir, err)
	}
	if f.customize != nil {
		if err := f.customize(dir); err != nil {
			return fmt.Errorf("customizing %s: %w", dir, err)
		}
	}
	return nil
}

// ensureBaseTree returns cacheDir/key, building it with build first unless
// a stamp says it is complete.
func ensureBaseTree(ctx context.Context, cacheDir, key string, build func(ctx context.Context, dir string, logf func(string, ...any)) error, logf func(string, ...any)) (string, error) {
	tree := filepath.Join(cacheDir, key)
	stamp := tree + ".stamp"
	if _, err := os.Stat(stamp); err == nil {
		return tree, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("creating cache directory %s: %w", cacheDir, err)
	}
	lockPath := tree + ".lock"
	lock, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("opening lock %s: %w", lockPath, err)
	}
	defer lock.Close()
	logf("waiting for lock %s", lockPath)
	if err := flock(ctx, lock); err != nil {
		return "", fmt.Errorf("locking %s: %w", lockPath, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing the file unlocks too

	// Another builder may have finished while we waited.
	if _, err := os.Stat(stamp); err == nil {
		return tree, nil
	}
	// A tree without its stamp is from a builder that died after the rename.
	if err := os.RemoveAll(tree); err != nil {
		return "", fmt.Errorf("removing incomplete tree %s: %w", tree, err)
	}
	removeStaleTemps(cacheDir, key, logf)

	tmp, err := os.MkdirTemp(cacheDir, ".tmp-"+key+"-")
	if err != nil {
		return "", fmt.Errorf("creating build directory in %s: %w", cacheDir, err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	start := time.Now()
	if err := build(ctx, tmp, logf); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, tree); err != nil {
		return "", fmt.Errorf("renaming %s to %s: %w", tmp, tree, err)
	}
	ok = true
	if err := writeFileAtomic(stamp, []byte(fmt.Sprintf("key=%s\nbuilt=%s\n", key, time.Now().UTC().Format(time.RFC3339))), 0o644); err != nil {
		return "", fmt.Errorf("writing stamp %s: %w", stamp, err)
	}
	logf("base tree %s built in %s", tree, time.Since(start).Round(time.Second))
	return tree, nil
}

// flock takes an exclusive lock, giving up when ctx ends.
func flock(ctx context.Context, f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if err != syscall.EWOULDBLOCK {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// removeStaleTemps removes build directories left by builders that died;
// it runs under the lock, so none of them is in use.
func removeStaleTemps(cacheDir, key string, logf func(string, ...any)) {
	matches, _ := filepath.Glob(filepath.Join(cacheDir, ".tmp-"+key+"-*"))
	for _, m := range matches {
		logf("removing stale build directory %s", m)
		os.RemoveAll(m)
	}
}

func debootstrap(ctx context.Context, dir, mirror string, packages []string) error {
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return fmt.Errorf("debootstrap not found: install the Debian package debootstrap (apt-get install debootstrap systemd-container dbus)")
	}
	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	args := []string{"--variant=minbase", "--include=" + strings.Join(packages, ","), Suite, dir}
	if mirror != "" {
		args = append(args, mirror)
	}
	cmd := exec.CommandContext(ctx, "debootstrap", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		log := filepath.Join(dir, "debootstrap", "debootstrap.log")
		detail, _ := os.ReadFile(log)
		return fmt.Errorf("debootstrap %s: %w\n%s\n%s", strings.Join(args, " "), err, tail(out, 4000), tail(detail, 4000))
	}
	return nil
}

// customizeTree prepares the tree for booting many copies of it in
// containers: every machine gets its own machine id, and units that only
// make sense on real hardware are masked.
func customizeTree(dir string) error {
	// An empty machine-id makes systemd generate a fresh one at each boot.
	if err := os.WriteFile(filepath.Join(dir, "etc/machine-id"), nil, 0o444); err != nil {
		return err
	}
	os.Remove(filepath.Join(dir, "var/lib/dbus/machine-id"))
	// debootstrap copies the host's name; Boot writes each machine's own.
	os.Remove(filepath.Join(dir, "etc/hostname"))
	for _, unit := range []string{
		// Nothing reads a console in tests, and a getty on a read-only
		// console only restarts in a loop.
		"console-getty.service",
		"getty@.service",
		"systemd-timesyncd.service",
		// Timers that would reach the network or load the disk mid-test.
		"apt-daily.timer",
		"apt-daily-upgrade.timer",
		"dpkg-db-backup.timer",
		"e2scrub_all.timer",
		"fstrim.timer",
	} {
		link := filepath.Join(dir, "etc/systemd/system", unit)
		os.Remove(link)
		if err := os.Symlink("/dev/null", link); err != nil {
			return err
		}
	}
	return nil
}

// hostMirror returns the first Debian mirror in the host's apt sources that
// serves suite, or "" to let debootstrap use its default.
func hostMirror(suite string) string {
	var files []string
	files = append(files, "/etc/apt/sources.list")
	more, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	files = append(files, more...)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var m string
		switch {
		case strings.HasSuffix(f, ".sources"):
			m = mirrorFromDeb822(string(data), suite)
		case strings.HasSuffix(f, ".list") || f == "/etc/apt/sources.list":
			m = mirrorFromOneLine(string(data), suite)
		}
		if m != "" {
			return m
		}
	}
	return ""
}

// mirrorFromDeb822 reads deb822 stanzas (Types, URIs, Suites, Components).
func mirrorFromDeb822(data, suite string) string {
	for _, stanza := range strings.Split(data, "\n\n") {
		fields := map[string]string{}
		sc := bufio.NewScanner(strings.NewReader(stanza))
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "#") || !strings.Contains(line, ":") || strings.HasPrefix(line, " ") {
				continue
			}
			k, v, _ := strings.Cut(line, ":")
			fields[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
		}
		if strings.EqualFold(fields["enabled"], "no") {
			continue
		}
		if !hasWord(fields["types"], "deb") || !hasWord(fields["suites"], suite) || !hasWord(fields["components"], "main") {
			continue
		}
		for _, u := range strings.Fields(fields["uris"]) {
			if strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://") {
				return u
			}
		}
	}
	return ""
}

// mirrorFromOneLine reads "deb [opts] URI suite components..." lines.
func mirrorFromOneLine(data, suite string) string {
	sc := bufio.NewScanner(strings.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") {
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) > 0 {
				f = f[1:]
			}
		}
		if len(f) < 3 || f[1] != suite || !hasWord(strings.Join(f[2:], " "), "main") {
			continue
		}
		if strings.HasPrefix(f[0], "http://") || strings.HasPrefix(f[0], "https://") {
			return f[0]
		}
	}
	return ""
}

func hasWord(list, w string) bool {
	for _, x := range strings.Fields(list) {
		if x == w {
			return true
		}
	}
	return false
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
