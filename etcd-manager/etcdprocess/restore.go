package etcdprocess

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// UtilPath returns <root>/v<version>/etcdutl, installed beside etcd, or an
// error naming the path looked for and the versions that are installed.
func UtilPath(binDirRoot, version string) (string, error) {
	return toolPath(binDirRoot, version, "etcdutl")
}

// toolPath finds <root>/v<version>/<name>. A missing file is the case of a
// version the installed binaries do not cover, said in those words.
func toolPath(root, version, name string) (string, error) {
	if version == "" {
		return "", errors.New("etcd version is empty")
	}
	p := filepath.Join(root, "v"+strings.TrimPrefix(version, "v"), name)
	st, err := os.Stat(p)
	if err != nil {
		avail, _ := filepath.Glob(filepath.Join(root, "v*", name))
		var names []string
		for _, a := range avail {
			names = append(names, strings.TrimPrefix(filepath.Base(filepath.Dir(a)), "v"))
		}
		return "", fmt.Errorf("%s of etcd version %s is not installed: %s not found, a version the installed binaries do not cover (%s installed in %s for: %s)", name, version, p, name, root, orNone(names))
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%s of etcd version %s: %s is not an executable file", name, version, p)
	}
	return p, nil
}

// DefaultRestoreTimeout bounds one etcdutl snapshot restore: it rewrites
// the database once, seconds for hundreds of megabytes.
const DefaultRestoreTimeout = 5 * time.Minute

// RestoreConfig describes one `etcdutl snapshot restore` into a new data
// directory for one member of the restored cluster.
type RestoreConfig struct {
	// BinDirRoot holds v<version>/etcdutl; Version is the etcd version
	// whose etcdutl restores (that of the cluster that will run the data).
	BinDirRoot string
	Version    string
	// Snapshot is the path of the plain bbolt database (backup.ExtractDB
	// of a backup read with backup.Read, which checked every hash), or of
	// etcd's snapshot format (the database and its sha256: etcdutl drops
	// the trailer). etcdutl is told to skip its own hash check, which a
	// plain database cannot pass; SnapshotSHA256, when set, is checked
	// instead.
	Snapshot string
	// SnapshotSHA256 is the hex sha256 the snapshot file must have (the
	// meta's dbSHA256); empty skips the check.
	SnapshotSHA256 string
	// DataDir is the member's new data directory; it must not exist. The
	// restore writes a sibling directory and renames it, so DataDir
	// appears complete or not at all.
	DataDir string
	// Name, InitialCluster ("name=url,..."), InitialClusterToken and
	// InitialAdvertisePeerURLs are the restored member's, as etcd will be
	// started with them.
	Name                     string
	InitialCluster           string
	InitialClusterToken      string
	InitialAdvertisePeerURLs []string
	// BumpRevision raises the restored revision by that much, and
	// MarkCompacted marks the new revision compacted, so watchers (API
	// server watch caches) resync instead of serving stale events. etcdutl
	// wants both or neither.
	BumpRevision  int64
	MarkCompacted bool
	// Timeout bounds etcdutl (DefaultRestoreTimeout when zero).
	Timeout time.Duration
	Logger  *slog.Logger
}

// Validate returns every problem with the config, naming the field.
func (c RestoreConfig) Validate() error {
	var errs []error
	if c.Snapshot == "" {
		errs = append(errs, errors.New("snapshot: empty"))
	}
	if c.SnapshotSHA256 != "" {
		if b, err := hex.DecodeString(c.SnapshotSHA256); err != nil || len(b) != sha256.Size {
			errs = append(errs, fmt.Errorf("snapshotSHA256: %q is not a hex sha256", c.SnapshotSHA256))
		}
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("dataDir: empty"))
	}
	if c.Name == "" {
		errs = append(errs, errors.New("name: empty"))
	}
	if c.InitialCluster == "" {
		errs = append(errs, errors.New("initialCluster: empty"))
	} else if !strings.Contains(","+c.InitialCluster, ","+c.Name+"=") {
		errs = append(errs, fmt.Errorf("initialCluster: %q does not name member %q", c.InitialCluster, c.Name))
	}
	if c.InitialClusterToken == "" {
		errs = append(errs, errors.New("initialClusterToken: empty"))
	}
	if len(c.InitialAdvertisePeerURLs) == 0 {
		errs = append(errs, errors.New("initialAdvertisePeerURLs: empty"))
	}
	if c.BumpRevision < 0 {
		errs = append(errs, fmt.Errorf("bumpRevision: %d is negative", c.BumpRevision))
	}
	if (c.BumpRevision > 0) != c.MarkCompacted {
		errs = append(errs, fmt.Errorf("markCompacted: %t with bumpRevision %d: etcdutl wants a compaction mark exactly when the revision is bumped", c.MarkCompacted, c.BumpRevision))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout: %s is negative", c.Timeout))
	}
	if _, err := UtilPath(c.BinDirRoot, c.Version); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Args returns etcdutl's command line (without the binary) restoring into
// dataDir.
func (c RestoreConfig) Args(dataDir string) []string {
	a := []string{
		"snapshot", "restore", c.Snapshot,
		"--data-dir=" + dataDir,
		"--name=" + c.Name,
		"--initial-cluster=" + c.InitialCluster,
		"--initial-cluster-token=" + c.InitialClusterToken,
		"--initial-advertise-peer-urls=" + strings.Join(c.InitialAdvertisePeerURLs, ","),
		// The file is a plain database: etcd's trailing hash was checked
		// and removed when the backup was taken.
		"--skip-hash-check=true",
	}
	if c.BumpRevision > 0 {
		a = append(a, "--bump-revision="+strconv.FormatInt(c.BumpRevision, 10), "--mark-compacted=true")
	}
	return a
}

// RestoreSnapshot runs `etcdutl snapshot restore` of the configured
// version. It refuses an existing DataDir, checks SnapshotSHA256 first,
// restores into a sibling directory and renames it into place, so a killed
// restore leaves no DataDir. The error of a failed run carries etcdutl's
// output.
func RestoreSnapshot(ctx context.Context, cfg RestoreConfig) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("restore of %s for member %s: %w", cfg.Snapshot, cfg.Name, err)
	}
	bin, _ := UtilPath(cfg.BinDirRoot, cfg.Version)
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if _, err := os.Lstat(cfg.DataDir); err == nil {
		return fmt.Errorf("restore of %s: data dir %s exists (a restore writes a new data dir and never replaces one)", cfg.Snapshot, cfg.DataDir)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("restore of %s: %w", cfg.Snapshot, err)
	}
	if cfg.SnapshotSHA256 != "" {
		if err := checkFileSHA256(cfg.Snapshot, cfg.SnapshotSHA256); err != nil {
			return err
		}
	}
	parent := filepath.Dir(cfg.DataDir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return fmt.Errorf("restore: creating %s: %w", parent, err)
	}
	// The sibling is ours by name: one left by a killed restore is removed.
	tmp := cfg.DataDir + ".restoring"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("restore: removing the leftover %s: %w", tmp, err)
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultRestoreTimeout
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	logger.Info("restoring etcd snapshot", "snapshot", cfg.Snapshot, "dataDir", cfg.DataDir, "member", cfg.Name,
		"version", cfg.Version, "bumpRevision", cfg.BumpRevision)
	out, err := run(rctx, bin, cfg.Args(tmp))
	if err != nil {
		_ = os.RemoveAll(tmp)
		if rctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("timed out after %s: %w", timeout, err)
		}
		return fmt.Errorf("%s snapshot restore of %s for member %s: %w; output:\n%s", bin, cfg.Snapshot, cfg.Name, err, out)
	}
	if err := os.Rename(tmp, cfg.DataDir); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("restore: moving %s to %s: %w", tmp, cfg.DataDir, err)
	}
	if err := syncDir(parent); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	logger.Info("restored etcd snapshot", "dataDir", cfg.DataDir, "member", cfg.Name, "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// maxOutput bounds the etcdutl output kept for an error message: its last
// lines say what failed.
const maxOutput = 16 << 10

// tailBuffer keeps the last maxOutput bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex // guards b
	b   []byte
	cut bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > maxOutput {
		t.b = append(t.b[:0], t.b[len(t.b)-maxOutput:]...)
		t.cut = true
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := string(bytes.TrimSpace(t.b))
	if t.cut {
		s = "..." + s
	}
	return s
}

// run runs bin with args until it exits or ctx ends (then it is killed),
// returning its combined output.
func run(ctx context.Context, bin string, args []string) (string, error) {
	var out tailBuffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return out.String(), err
}

func checkFileSHA256(path, want string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("restore: hashing %s: %w", path, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, want) {
		return fmt.Errorf("restore: snapshot %s has sha256 %s, want %s", path, got, want)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
