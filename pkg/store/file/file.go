// Package file is the state store backend on a local directory
// (file:///path), the embedded default. Writes go to a temporary file in the
// object's directory that is fsynced, then renamed (or, for create-if-absent,
// hard-linked) into place under a store-wide lock, and the directory is
// fsynced; a crashed write leaves only a temporary file that List never shows
// and a later New removes.
package file

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kopsnode/agents/pkg/store"
)

const (
	// reservedPrefix starts every name the backend keeps for itself (temp
	// files, the lock file). Keys with a segment that starts with it are
	// refused and such files are never listed.
	reservedPrefix = ".kopsnode-"
	tempPrefix     = reservedPrefix + "tmp-"
	lockName       = reservedPrefix + "lock"
	// versionXattr holds a random token written with every object, so that
	// two writes never share a version even when the inode number is reused.
	versionXattr = "user.kopsnode.version"
)

// Options configures a file store.
type Options struct {
	// CreateRoot creates the root directory (mode 0700) when it is missing.
	// Without it a missing root makes every operation fail with
	// store.ErrNoBucket.
	CreateRoot bool
	// StaleTempAge is the age after which New removes temporary files left by
	// crashed writes; 0 means one hour. Younger ones may belong to a write in
	// progress in another process.
	StaleTempAge time.Duration
	// Logger receives the removal of stale temporary files; nil discards.
	Logger *slog.Logger
}

// Store is a state store on a local directory. It is safe for concurrent use
// by several goroutines and several processes.
type Store struct {
	root string
	url  string
	log  *slog.Logger
}

var _ store.Store = (*Store)(nil)

// New opens the store rooted at the absolute directory root.
func New(root string, opts Options) (*Store, error) {
	u := "file://" + root
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("file store %s: root %q is not an absolute path", u, root)
	}
	root = filepath.Clean(root)
	s := &Store{root: root, url: "file://" + root, log: opts.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if opts.CreateRoot {
		if err := os.MkdirAll(root, 0o700); err != nil {
			return nil, s.err("open", "", err)
		}
	}
	age := opts.StaleTempAge
	if age == 0 {
		age = time.Hour
	}
	s.removeStaleTemps(age)
	return s, nil
}

// URL returns file:///path.
func (s *Store) URL() string { return s.url }

// Close does nothing; a file store holds no resources between calls.
func (s *Store) Close() error { return nil }

// Open streams an object.
func (s *Store) Open(ctx context.Context, key string) (io.ReadCloser, store.Info, error) {
	p, err := s.path("open", key)
	if err != nil {
		return nil, store.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return nil, store.Info{}, s.err("open", key, err)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, store.Info{}, s.err("open", key, err)
	}
	info, err := s.info(f, key)
	if err != nil {
		f.Close()
		return nil, store.Info{}, s.err("open", key, err)
	}
	return f, info, nil
}

// Stat returns an object's metadata.
func (s *Store) Stat(ctx context.Context, key string) (store.Info, error) {
	p, err := s.path("stat", key)
	if err != nil {
		return store.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return store.Info{}, s.err("stat", key, err)
	}
	f, err := os.Open(p)
	if err != nil {
		return store.Info{}, s.err("stat", key, err)
	}
	defer f.Close()
	info, err := s.info(f, key)
	if err != nil {
		return store.Info{}, s.err("stat", key, err)
	}
	return info, nil
}

// Put writes an object atomically: the data streams into a temporary file
// beside the object, which is fsynced and then moved into place under the
// store lock after the condition is checked.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, cond store.Condition) (store.Info, error) {
	p, err := s.path("put", key)
	if err != nil {
		return store.Info{}, err
	}
	if err := s.checkRoot(); err != nil {
		return store.Info{}, s.err("put", key, err)
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return store.Info{}, s.err("put", key, err)
	}
	tmp, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return store.Info{}, s.err("put", key, err)
	}
	tmpName := tmp.Name()
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	if _, err := io.Copy(tmp, store.ContextReader(ctx, r)); err != nil {
		return store.Info{}, s.err("put", key, fmt.Errorf("writing data: %w", err))
	}
	token, err := newToken()
	if err != nil {
		return store.Info{}, s.err("put", key, err)
	}
	if err := unix.Fsetxattr(int(tmp.Fd()), versionXattr, []byte(token), 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
		return store.Info{}, s.err("put", key, fmt.Errorf("setting version attribute: %w", err))
	}
	if err := tmp.Sync(); err != nil {
		return store.Info{}, s.err("put", key, fmt.Errorf("syncing data: %w", err))
	}
	if err := ctx.Err(); err != nil {
		return store.Info{}, s.err("put", key, err)
	}

	unlock, err := s.lock()
	if err != nil {
		return store.Info{}, s.err("put", key, err)
	}
	defer unlock()
	if err := s.checkCondition(p, key, cond); err != nil {
		return store.Info{}, s.err("put", key, err)
	}
	if cond.IfAbsent {
		// link(2) refuses to replace an existing name, so even a writer that
		// does not take our lock cannot be overwritten.
		if err := os.Link(tmpName, p); err != nil {
			if errors.Is(err, fs.ErrExist) {
				err = fmt.Errorf("%w: object exists", store.ErrPrecondition)
			}
			return store.Info{}, s.err("put", key, err)
		}
		os.Remove(tmpName)
	} else if err := os.Rename(tmpName, p); err != nil {
		return store.Info{}, s.err("put", key, err)
	}
	committed = true
	info, ierr := s.info(tmp, key)
	tmp.Close()
	if err := syncDir(dir); err != nil {
		return store.Info{}, s.err("put", key, fmt.Errorf("syncing directory: %w", err))
	}
	if ierr != nil {
		return store.Info{}, s.err("put", key, ierr)
	}
	return info, nil
}

// checkCondition is called with the store lock held.
func (s *Store) checkCondition(p, key string, cond store.Condition) error {
	if !cond.IfAbsent && cond.IfVersion == "" {
		return nil
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		if cond.IfVersion != "" {
			return fmt.Errorf("%w: object is absent, wanted version %s", store.ErrPrecondition, cond.IfVersion)
		}
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if cond.IfAbsent {
		return fmt.Errorf("%w: object exists", store.ErrPrecondition)
	}
	info, err := s.info(f, key)
	if err != nil {
		return err
	}
	if info.Version != cond.IfVersion {
		return fmt.Errorf("%w: object is at version %s, wanted %s", store.ErrPrecondition, info.Version, cond.IfVersion)
	}
	return nil
}

// List returns every object under prefix, sorted by key.
func (s *Store) List(ctx context.Context, prefix string) ([]store.Info, error) {
	if err := store.ValidatePrefix(prefix); err != nil {
		return nil, s.err("list", prefix, err)
	}
	if err := s.checkRoot(); err != nil {
		return nil, s.err("list", prefix, err)
	}
	// Walk only the deepest directory that the prefix names in full.
	start := s.root
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = filepath.Join(s.root, filepath.FromSlash(prefix[:i]))
	}
	var out []store.Info
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == start && errors.Is(err, fs.ErrNotExist) {
				return filepath.SkipDir
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), reservedPrefix) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(s.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // deleted while we walked
		}
		if err != nil {
			return err
		}
		info, err := s.info(f, key)
		f.Close()
		if err != nil {
			return err
		}
		out = append(out, info)
		return nil
	})
	if err != nil {
		return nil, s.err("list", prefix, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete removes an object; an absent one is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	p, err := s.path("delete", key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return s.err("delete", key, err)
	}
	if err := s.checkRoot(); err != nil {
		return s.err("delete", key, err)
	}
	unlock, err := s.lock()
	if err != nil {
		return s.err("delete", key, err)
	}
	defer unlock()
	if err := os.Remove(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return s.err("delete", key, err)
	}
	if err := syncDir(filepath.Dir(p)); err != nil {
		return s.err("delete", key, fmt.Errorf("syncing directory: %w", err))
	}
	return nil
}

// path validates key and returns its file path.
func (s *Store) path(op, key string) (string, error) {
	if err := store.ValidateKey(key); err != nil {
		return "", s.err(op, key, err)
	}
	for _, seg := range strings.Split(key, "/") {
		if strings.HasPrefix(seg, reservedPrefix) {
			return "", s.err(op, key, fmt.Errorf("%w %q: segments starting with %q are reserved", store.ErrInvalidKey, key, reservedPrefix))
		}
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

// checkRoot returns an error wrapping store.ErrNoBucket when the root
// directory is missing.
func (s *Store) checkRoot() error {
	fi, err := os.Stat(s.root)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: directory %s does not exist", store.ErrNoBucket, s.root)
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s is not a directory", store.ErrNoBucket, s.root)
	}
	return nil
}

// lock takes the store-wide lock that orders every commit (rename, link)
// and delete, across goroutines and processes.
func (s *Store) lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.root, lockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock file: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil // closing the descriptor drops the lock
}

// info describes the open file f as the object key.
func (s *Store) info(f *os.File, key string) (store.Info, error) {
	fi, err := f.Stat()
	if err != nil {
		return store.Info{}, err
	}
	if fi.IsDir() {
		return store.Info{}, fmt.Errorf("%w: %s is a directory", store.ErrNotFound, key)
	}
	return store.Info{Key: key, Size: fi.Size(), Version: version(f, fi), Modified: fi.ModTime()}, nil
}

// version is the random token written with the object (when the file
// system keeps extended attributes) joined with the inode number, the
// modification time and the size, so that an edit made in place by hand
// also changes the version.
func version(f *os.File, fi fs.FileInfo) store.Version {
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	v := strconv.FormatUint(ino, 36) + "." + strconv.FormatInt(fi.ModTime().UnixNano(), 36) + "." + strconv.FormatInt(fi.Size(), 36)
	buf := make([]byte, 64)
	if n, err := unix.Fgetxattr(int(f.Fd()), versionXattr, buf); err == nil && n > 0 {
		v = string(buf[:n]) + "." + v
	}
	return store.Version(v)
}

// removeStaleTemps deletes temporary files older than age left by writes
// that crashed before their rename.
func (s *Store) removeStaleTemps(age time.Duration) {
	cutoff := time.Now().Add(-age)
	_ = filepath.WalkDir(s.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() || !strings.HasPrefix(d.Name(), tempPrefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil || fi.ModTime().After(cutoff) {
			return nil
		}
		if err := os.Remove(p); err == nil {
			s.log.Info("removed temporary file of an unfinished write", "path", p, "modified", fi.ModTime())
		}
		return nil
	})
}

// err wraps err in *store.Error with the object's URL, mapping file system
// errors to the store's sentinel errors.
func (s *Store) err(op, key string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrNoBucket),
		errors.Is(err, store.ErrPrecondition), errors.Is(err, store.ErrAccessDenied),
		errors.Is(err, store.ErrInvalidKey):
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		if rerr := s.checkRoot(); rerr != nil && errors.Is(rerr, store.ErrNoBucket) {
			err = fmt.Errorf("%w: %w", rerr, err)
		} else {
			err = fmt.Errorf("%w: %w", store.ErrNotFound, err)
		}
	case errors.Is(err, fs.ErrPermission):
		err = fmt.Errorf("%w: %w", store.ErrAccessDenied, err)
	}
	return &store.Error{Op: op, URL: store.JoinURL(s.url, key), Err: err}
}

func newToken() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("making version token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
