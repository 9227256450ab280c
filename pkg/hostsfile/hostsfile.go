// Package hostsfile is the one writer of the hosts file (/etc/hosts) for
// every agent on a node. Each agent owns a named block between a begin and
// an end marker; an update is a read-modify-write of that block under an
// exclusive flock on a lock file beside the hosts file, so agents in
// different processes (gossip, one etcd-manager per etcd cluster) never
// lose each other's blocks. The file is replaced atomically by rename (or
// rewritten in place when it is a bind mount), and every line outside the
// block is kept byte for byte.
package hostsfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// LockSuffix names the lock file: the hosts file's path plus this
// (/etc/hosts.kopsnode.lock). The lock is not taken on the hosts file
// itself, which each update replaces by rename, so a lock held on it would
// guard a file that is no longer there.
const LockSuffix = ".kopsnode.lock"

// LockPath returns the lock file of a hosts file.
func LockPath(hostsPath string) string { return hostsPath + LockSuffix }

// tempPrefix starts the names of temporary files beside the hosts file;
// an update removes any left by a writer that was killed.
func tempPrefix(hostsPath string) string { return "." + filepath.Base(hostsPath) + ".kopsnode-" }

// Block names an owner's managed block by its marker lines.
type Block struct {
	Begin, End string
}

// Named returns the block of an owner: "# Begin <owner> (managed; do not
// edit)" ... "# End <owner>".
func Named(owner string) Block {
	return Block{Begin: "# Begin " + owner + " (managed; do not edit)", End: "# End " + owner}
}

// Validate checks that the markers are distinct one-line comments.
func (b Block) Validate() error {
	var errs []error
	for _, m := range []struct{ name, v string }{{"begin", b.Begin}, {"end", b.End}} {
		if !strings.HasPrefix(m.v, "#") || strings.ContainsAny(m.v, "\r\n") || strings.TrimSpace(m.v) != m.v {
			errs = append(errs, fmt.Errorf("%s marker %q: must be one comment line starting with # without surrounding spaces", m.name, m.v))
		}
	}
	if b.Begin == b.End {
		errs = append(errs, fmt.Errorf("begin and end markers are the same %q", b.Begin))
	}
	return errors.Join(errs...)
}

// Entry maps an address to names: one line of the block.
type Entry struct {
	Addr  netip.Addr
	Names []string
}

// ByName builds entries from a name → addresses map: one line per address,
// names lower-cased without a trailing dot and sorted, addresses sorted,
// so the output is stable.
func ByName(names map[string][]netip.Addr) []Entry {
	byAddr := map[netip.Addr][]string{}
	for n, as := range names {
		n = strings.TrimSuffix(strings.ToLower(n), ".")
		for _, a := range as {
			byAddr[a.Unmap()] = append(byAddr[a.Unmap()], n)
		}
	}
	out := make([]Entry, 0, len(byAddr))
	for a, ns := range byAddr {
		sort.Strings(ns)
		uniq := ns[:0]
		for i, n := range ns {
			if i == 0 || n != ns[i-1] {
				uniq = append(uniq, n)
			}
		}
		out = append(out, Entry{Addr: a, Names: uniq})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr.Less(out[j].Addr) })
	return out
}

// ValidateEntries reports every entry a hosts file cannot hold, naming
// entries[i].
func ValidateEntries(entries []Entry) error {
	var errs []error
	for i, e := range entries {
		if !e.Addr.IsValid() {
			errs = append(errs, fmt.Errorf("entries[%d].addr: not an IP address", i))
		}
		if len(e.Names) == 0 {
			errs = append(errs, fmt.Errorf("entries[%d].names: empty", i))
		}
		for j, n := range e.Names {
			if n == "" || strings.ContainsFunc(n, func(r rune) bool { return r <= ' ' || r == '#' || r == 0x7f }) {
				errs = append(errs, fmt.Errorf("entries[%d].names[%d]: %q is not a host name", i, j, n))
			}
		}
	}
	return errors.Join(errs...)
}

// Render returns existing with b's block replaced by entries: where the
// block was, at the end when it was absent, or removed when entries is
// empty. Every line outside the block is kept byte for byte (a last line
// without a newline gets one when a block follows it); a second copy of
// the block is dropped. It fails, so that the file is kept as it is, when
// a begin marker has no end marker: it could not tell where the block
// stops.
func Render(existing []byte, b Block, entries []Entry) ([]byte, error) {
	lines := strings.SplitAfter(string(existing), "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	var before, after []string
	inBlock, seen, beginLine := false, false, 0
	for i, l := range lines {
		t := strings.TrimRight(l, "\r\n")
		switch {
		case t == b.Begin && !inBlock:
			inBlock, seen, beginLine = true, true, i+1
		case t == b.End && inBlock:
			inBlock = false
		case inBlock:
			// the block's old content
		case seen:
			after = append(after, l)
		default:
			before = append(before, l)
		}
	}
	if inBlock {
		return nil, fmt.Errorf("line %d: %q has no %q after it", beginLine, b.Begin, b.End)
	}
	var out bytes.Buffer
	for _, l := range before {
		out.WriteString(l)
	}
	if len(entries) > 0 {
		if out.Len() > 0 && !bytes.HasSuffix(out.Bytes(), []byte("\n")) {
			out.WriteByte('\n')
		}
		out.WriteString(b.Begin + "\n")
		for _, e := range entries {
			out.WriteString(e.Addr.String() + "\t" + strings.Join(e.Names, " ") + "\n")
		}
		out.WriteString(b.End + "\n")
	}
	for _, l := range after {
		out.WriteString(l)
	}
	return out.Bytes(), nil
}

// File is the part of *os.File the writer uses.
type File interface {
	Write(p []byte) (int, error)
	Sync() error
	Close() error
	Name() string
	Chmod(mode fs.FileMode) error
	Chown(uid, gid int) error
}

// FS is the filesystem seam of the hosts file (not of its lock), so tests
// can inject faults such as a rename refused on a bind mount.
type FS interface {
	ReadFile(name string) ([]byte, error)
	Stat(name string) (fs.FileInfo, error)
	CreateTemp(dir, pattern string) (File, error)
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	Rename(oldpath, newpath string) error
	Remove(name string) error
	ReadDir(name string) ([]fs.DirEntry, error)
}

// OS is the real filesystem.
type OS struct{}

func (OS) ReadFile(name string) ([]byte, error)                  { return os.ReadFile(name) }
func (OS) Stat(name string) (fs.FileInfo, error)                 { return os.Stat(name) }
func (OS) CreateTemp(dir, pattern string) (File, error)          { return os.CreateTemp(dir, pattern) }
func (OS) Rename(oldpath, newpath string) error                  { return os.Rename(oldpath, newpath) }
func (OS) Remove(name string) error                              { return os.Remove(name) }
func (OS) OpenFile(n string, f int, p fs.FileMode) (File, error) { return os.OpenFile(n, f, p) }
func (OS) ReadDir(name string) ([]fs.DirEntry, error)            { return os.ReadDir(name) }

// Hosts is one hosts file.
type Hosts struct {
	// Path is the hosts file, for example /etc/hosts.
	Path string
	// FS is the filesystem of Path; nil: OS.
	FS FS
}

func (h Hosts) fs() FS {
	if h.FS == nil {
		return OS{}
	}
	return h.FS
}

// Update sets b's block to entries (removing it when entries is empty)
// under the file's lock, and reports whether the file changed. It waits
// for the lock until ctx ends. On any error the file is left as it was.
func (h Hosts) Update(ctx context.Context, b Block, entries []Entry) (bool, error) {
	if err := b.Validate(); err != nil {
		return false, fmt.Errorf("%s: %w", h.Path, err)
	}
	if err := ValidateEntries(entries); err != nil {
		return false, fmt.Errorf("%s: %w", h.Path, err)
	}
	unlock, err := lock(ctx, LockPath(h.Path))
	if err != nil {
		return false, err
	}
	defer unlock()
	fsys := h.fs()
	h.removeStaleTemps(fsys)
	old, err := fsys.ReadFile(h.Path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("reading %s: %w", h.Path, err)
	}
	content, err := Render(old, b, entries)
	if err != nil {
		return false, fmt.Errorf("%s (left as it is): %w", h.Path, err)
	}
	if bytes.Equal(old, content) {
		return false, nil
	}
	if err := writeFile(fsys, h.Path, content); err != nil {
		return false, err
	}
	return true, nil
}

// lock takes an exclusive flock on path (created if absent), polling so
// that ctx can end the wait. flock locks belong to the open file, so two
// opens in one process exclude each other as two processes do. The lock
// file is never removed: removing it would let a later writer lock a new
// file while an earlier one still holds the old.
func lock(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the hosts file lock %s: %w", path, err)
	}
	wait := 2 * time.Millisecond
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("waiting for the hosts file lock %s (another process holds it): %w", path, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// removeStaleTemps removes temporary files that a killed writer left
// beside the hosts file. Only a lock holder writes them, so none is in use.
func (h Hosts) removeStaleTemps(fsys FS) {
	ents, err := fsys.ReadDir(filepath.Dir(h.Path))
	if err != nil {
		return
	}
	prefix := tempPrefix(h.Path)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) && !e.IsDir() {
			_ = fsys.Remove(filepath.Join(filepath.Dir(h.Path), e.Name()))
		}
	}
}

// writeFile replaces path with content: temp file, fsync, rename. When the
// rename is refused because path is a mount point (EBUSY) or on another
// filesystem (EXDEV), as a bind-mounted /etc/hosts in a container is, it
// rewrites path in place with the full content; the lock keeps the other
// agents out meanwhile.
func writeFile(fsys FS, path string, content []byte) error {
	mode := fs.FileMode(0o644)
	uid, gid := -1, -1
	if fi, err := fsys.Stat(path); err == nil {
		mode = fi.Mode().Perm()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(st.Uid), int(st.Gid)
		}
	}
	tmp, err := fsys.CreateTemp(filepath.Dir(path), tempPrefix(path)+"*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			_ = fsys.Remove(tmpName)
		}
	}()
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", tmpName, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", tmpName, err)
	}
	if uid >= 0 {
		_ = tmp.Chown(uid, gid) // best effort: keeps a container's ownership
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("syncing %s: %w", tmpName, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", tmpName, err)
	}
	err = fsys.Rename(tmpName, path)
	if err == nil {
		ok = true
		return nil
	}
	if !errors.Is(err, syscall.EBUSY) && !errors.Is(err, syscall.EXDEV) {
		return fmt.Errorf("replacing %s: %w", path, err)
	}
	f, err := fsys.OpenFile(path, os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("rewriting bind-mounted %s in place: %w", path, err)
	}
	if _, err := f.Write(content); err != nil {
		f.Close()
		return fmt.Errorf("rewriting bind-mounted %s in place: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("rewriting bind-mounted %s in place: %w", path, err)
	}
	return nil
}
