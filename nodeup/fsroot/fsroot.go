// Package fsroot is the filesystem seam of nodeup: every file operation a task
// makes goes through an FS rooted at a directory (the --root flag), so that a
// task never touches the host by accident and tests run under t.TempDir().
// Writes are atomic: a temporary file in the same directory is written,
// synced, given its mode and owner, renamed over the target, and the
// directory is synced.
package fsroot

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// Hooks inject faults in tests. A nil hook does nothing.
type Hooks struct {
	// BeforeRename is called with the host paths of the temporary file and
	// the target; an error aborts the write (the temporary file is removed).
	BeforeRename func(tmp, target string) error
}

// FS is a filesystem rooted at Root. Paths given to its methods are absolute
// paths inside the root ("/etc/containerd/config.toml").
type FS struct {
	root  string
	hooks Hooks
}

// New returns an FS rooted at root ("/" for the live machine).
func New(root string) (*FS, error) {
	if root == "" {
		root = "/"
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("root %q: %w", root, err)
	}
	return &FS{root: abs}, nil
}

// WithHooks returns a copy of f with fault-injection hooks.
func (f *FS) WithHooks(h Hooks) *FS { return &FS{root: f.root, hooks: h} }

// Root returns the host path of the root.
func (f *FS) Root() string { return f.root }

// IsLive reports whether the root is the running system's "/".
func (f *FS) IsLive() bool { return f.root == "/" }

// Path maps a path inside the root to a host path. It refuses relative
// paths and paths that would climb out of the root.
func (f *FS) Path(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("path %q is not absolute", p)
	}
	clean := path.Clean(p)
	if f.root == "/" {
		return clean, nil
	}
	return filepath.Join(f.root, clean), nil
}

func (f *FS) must(p string) (string, error) { return f.Path(p) }

// ReadFile reads a file inside the root.
func (f *FS) ReadFile(p string) ([]byte, error) {
	hp, err := f.must(p)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(hp)
}

// Lstat stats a path inside the root without following a final symlink.
func (f *FS) Lstat(p string) (fs.FileInfo, error) {
	hp, err := f.must(p)
	if err != nil {
		return nil, err
	}
	return os.Lstat(hp)
}

// Stat stats a path inside the root.
func (f *FS) Stat(p string) (fs.FileInfo, error) {
	hp, err := f.must(p)
	if err != nil {
		return nil, err
	}
	return os.Stat(hp)
}

// Exists reports whether a path exists (without following a final symlink).
func (f *FS) Exists(p string) bool {
	_, err := f.Lstat(p)
	return err == nil
}

// Readlink reads a symlink inside the root.
func (f *FS) Readlink(p string) (string, error) {
	hp, err := f.must(p)
	if err != nil {
		return "", err
	}
	return os.Readlink(hp)
}

// ReadDir lists a directory inside the root.
func (f *FS) ReadDir(p string) ([]fs.DirEntry, error) {
	hp, err := f.must(p)
	if err != nil {
		return nil, err
	}
	return os.ReadDir(hp)
}

// Owner is a numeric owner; -1 leaves a side unchanged.
type Owner struct{ UID, GID int }

// RootOwner is root:root.
var RootOwner = Owner{0, 0}

// OwnerOf returns the numeric owner of a file info.
func OwnerOf(fi fs.FileInfo) Owner {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return Owner{int(st.Uid), int(st.Gid)}
	}
	return Owner{-1, -1}
}

// MkdirAll creates a directory and its parents with mode (parents get 0755).
func (f *FS) MkdirAll(p string, mode fs.FileMode) error {
	hp, err := f.must(p)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", path.Dir(p), err)
	}
	if err := os.Mkdir(hp, mode); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating %s: %w", p, err)
	}
	return nil
}

// Chmod sets the mode of a path.
func (f *FS) Chmod(p string, mode fs.FileMode) error {
	hp, err := f.must(p)
	if err != nil {
		return err
	}
	if err := os.Chmod(hp, mode); err != nil {
		return fmt.Errorf("chmod %s: %w", p, err)
	}
	return nil
}

// Chown sets the owner of a path (not following symlinks).
func (f *FS) Chown(p string, o Owner) error {
	hp, err := f.must(p)
	if err != nil {
		return err
	}
	if err := os.Lchown(hp, o.UID, o.GID); err != nil {
		return fmt.Errorf("chown %s: %w", p, err)
	}
	return nil
}

// WriteFile writes data to p atomically with mode and owner.
func (f *FS) WriteFile(p string, data []byte, mode fs.FileMode, owner Owner) error {
	return f.WriteFrom(p, strings.NewReader(string(data)), mode, owner)
}

// WriteFrom streams r into p atomically with mode and owner. On any error
// the target is left as it was and no temporary file remains.
func (f *FS) WriteFrom(p string, r io.Reader, mode fs.FileMode, owner Owner) (err error) {
	hp, err := f.must(p)
	if err != nil {
		return err
	}
	dir := filepath.Dir(hp)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("writing %s: creating directory: %w", p, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(hp)+".nodeup-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	tmpName := tmp.Name()
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	if _, err = io.Copy(tmp, r); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	if err = tmp.Chmod(mode); err != nil {
		return fmt.Errorf("writing %s: chmod: %w", p, err)
	}
	if owner.UID >= 0 || owner.GID >= 0 {
		if err = tmp.Chown(owner.UID, owner.GID); err != nil {
			return fmt.Errorf("writing %s: chown: %w", p, err)
		}
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("writing %s: fsync: %w", p, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	if f.hooks.BeforeRename != nil {
		if err = f.hooks.BeforeRename(tmpName, hp); err != nil {
			return fmt.Errorf("writing %s: %w", p, err)
		}
	}
	if err = os.Rename(tmpName, hp); err != nil {
		return fmt.Errorf("writing %s: rename: %w", p, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}

// Symlink makes p a symlink to target atomically (replacing what is there).
func (f *FS) Symlink(target, p string) error {
	hp, err := f.must(p)
	if err != nil {
		return err
	}
	dir := filepath.Dir(hp)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("symlink %s: %w", p, err)
	}
	tmp := filepath.Join(dir, "."+filepath.Base(hp)+".nodeup-link")
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("symlink %s: %w", p, err)
	}
	if err := os.Rename(tmp, hp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("symlink %s: %w", p, err)
	}
	return syncDir(dir)
}

// Remove removes a file or empty directory; absent is not an error.
func (f *FS) Remove(p string) error {
	hp, err := f.must(p)
	if err != nil {
		return err
	}
	if err := os.Remove(hp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", p, err)
	}
	return nil
}

// RemoveAll removes a tree; absent is not an error.
func (f *FS) RemoveAll(p string) error {
	hp, err := f.must(p)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(hp); err != nil {
		return fmt.Errorf("removing %s: %w", p, err)
	}
	return nil
}

// Rename renames a path inside the root and syncs the directory.
func (f *FS) Rename(from, to string) error {
	hf, err := f.must(from)
	if err != nil {
		return err
	}
	ht, err := f.must(to)
	if err != nil {
		return err
	}
	if err := os.Rename(hf, ht); err != nil {
		return fmt.Errorf("renaming %s to %s: %w", from, to, err)
	}
	return syncDir(filepath.Dir(ht))
}

// MkdirTemp makes a temporary directory next to p (same filesystem, so it
// can be renamed onto p).
func (f *FS) MkdirTemp(p string) (string, error) {
	hp, err := f.must(p)
	if err != nil {
		return "", err
	}
	dir := filepath.Dir(hp)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating %s: %w", path.Dir(p), err)
	}
	tmp, err := os.MkdirTemp(dir, "."+filepath.Base(hp)+".nodeup-*")
	if err != nil {
		return "", fmt.Errorf("creating temporary directory for %s: %w", p, err)
	}
	return path.Join(path.Dir(path.Clean(p)), filepath.Base(tmp)), nil
}

// HashFile returns the hex sha256 of a file inside the root.
func (f *FS) HashFile(p string) (string, error) {
	hp, err := f.must(p)
	if err != nil {
		return "", err
	}
	fh, err := os.Open(hp)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return "", fmt.Errorf("hashing %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Open opens a file inside the root for reading.
func (f *FS) Open(p string) (*os.File, error) {
	hp, err := f.must(p)
	if err != nil {
		return nil, err
	}
	return os.Open(hp)
}

// HashBytes returns the hex sha256 of b.
func HashBytes(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
