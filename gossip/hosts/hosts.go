// Package hosts keeps a managed block of /etc/hosts in step with the gossip
// DNS names: one clearly delimited block, written atomically by rename, or
// rewritten in place when the file is a bind mount (as in containers) where
// a rename onto it fails. Lines outside the block are never changed.
package hosts

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// Block markers. The end marker must follow the begin marker.
const (
	BeginMarker = "# Begin host entries managed by kopsnode gossip - do not edit"
	EndMarker   = "# End host entries managed by kopsnode gossip"
)

// Entry maps an address to names.
type Entry struct {
	Addr  netip.Addr
	Names []string
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

// FS is the filesystem seam, so tests can inject faults.
type FS interface {
	ReadFile(name string) ([]byte, error)
	Stat(name string) (fs.FileInfo, error)
	CreateTemp(dir, pattern string) (File, error)
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	Rename(oldpath, newpath string) error
	Remove(name string) error
}

// OS is the real filesystem.
type OS struct{}

func (OS) ReadFile(name string) ([]byte, error)                  { return os.ReadFile(name) }
func (OS) Stat(name string) (fs.FileInfo, error)                 { return os.Stat(name) }
func (OS) CreateTemp(dir, pattern string) (File, error)          { return os.CreateTemp(dir, pattern) }
func (OS) Rename(oldpath, newpath string) error                  { return os.Rename(oldpath, newpath) }
func (OS) Remove(name string) error                              { return os.Remove(name) }
func (OS) OpenFile(n string, f int, p fs.FileMode) (File, error) { return os.OpenFile(n, f, p) }

// ByName builds entries from a name → addresses map: one line per address,
// names sorted, addresses sorted, so the output is stable.
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

// Render returns existing with its managed block replaced by entries (or
// appended, or removed when entries is empty). Everything outside the block
// is kept byte for byte. It fails when a begin marker has no end marker,
// since it could not tell where the block stops.
func Render(existing []byte, entries []Entry) ([]byte, error) {
	lines := strings.SplitAfter(string(existing), "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	var before, after []string
	inBlock, seen := false, false
	for _, l := range lines {
		t := strings.TrimRight(l, "\r\n")
		switch {
		case t == BeginMarker && !inBlock:
			// A second block is dropped too: the one block goes where the
			// first was.
			inBlock, seen = true, true
		case t == EndMarker && inBlock:
			inBlock = false
		case inBlock:
			// dropped: managed content
		case seen:
			after = append(after, l)
		default:
			before = append(before, l)
		}
	}
	if inBlock {
		return nil, errors.New("managed block has a begin marker but no end marker")
	}
	var b bytes.Buffer
	for _, l := range before {
		b.WriteString(l)
	}
	if b.Len() > 0 && !bytes.HasSuffix(b.Bytes(), []byte("\n")) {
		b.WriteByte('\n')
	}
	if len(entries) > 0 {
		b.WriteString(BeginMarker + "\n")
		for _, e := range entries {
			fmt.Fprintf(&b, "%s\t%s\n", e.Addr, strings.Join(e.Names, " "))
		}
		b.WriteString(EndMarker + "\n")
	}
	for _, l := range after {
		b.WriteString(l)
	}
	return b.Bytes(), nil
}

// Writer updates one hosts file.
type Writer struct {
	FS   FS
	Path string
}

// Update renders the block and writes the file if it changed. It reports
// whether it wrote.
func (w Writer) Update(entries []Entry) (bool, error) {
	fsys := w.FS
	if fsys == nil {
		fsys = OS{}
	}
	old, err := fsys.ReadFile(w.Path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("reading %s: %w", w.Path, err)
	}
	content, err := Render(old, entries)
	if err != nil {
		return false, fmt.Errorf("%s: %w", w.Path, err)
	}
	if bytes.Equal(old, content) {
		return false, nil
	}
	if err := writeFile(fsys, w.Path, content); err != nil {
		return false, err
	}
	return true, nil
}

// writeFile replaces path with content: temp file, fsync, rename. When the
// rename is refused because path is a mount point (EBUSY) or on another
// filesystem (EXDEV), it rewrites path in place with the full content.
func writeFile(fsys FS, path string, content []byte) error {
	mode := fs.FileMode(0o644)
	uid, gid := -1, -1
	if fi, err := fsys.Stat(path); err == nil {
		mode = fi.Mode().Perm()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(st.Uid), int(st.Gid)
		}
	}
	tmp, err := fsys.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
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
	// Bind-mounted file: the mount point cannot be renamed over, so write
	// through it. Readers may see a short file for a moment; the content is
	// complete once this returns.
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
