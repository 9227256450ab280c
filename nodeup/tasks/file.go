// Package tasks holds nodeup's task types: files, directories, symlinks,
// managed blocks, assets, binaries installed from assets, OS packages,
// systemd services, sysctls, kernel modules, users and groups. Each finds the
// actual state through the engine's seams (root-prefixed filesystem, command
// runner, systemd manager), returns a typed diff, and applies only that.
package tasks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/fsroot"
)

// FileID is the task ID of whatever task writes path.
func FileID(path string) string { return "file:" + path }

// File is a regular file with wanted content, mode and owner.
type File struct {
	Path    string
	Content []byte
	Mode    fs.FileMode
	Owner   fsroot.Owner
	// Secret hides the content in plans (keys, kubeconfigs).
	Secret bool
	Needs  []string
	// PhaseOf defaults to boot.
	PhaseOf engine.Phase
}

func (t *File) ID() string     { return FileID(t.Path) }
func (t *File) Deps() []string { return t.Needs }
func (t *File) Phase() engine.Phase {
	if t.PhaseOf == "" {
		return engine.PhaseBoot
	}
	return t.PhaseOf
}

// FileDiff is the difference for a File.
type FileDiff struct {
	Path           string
	Create         bool
	ContentChanged bool
	Old, New       []byte
	Secret         bool
	OldMode        fs.FileMode
	NewMode        fs.FileMode
	OldOwner       fsroot.Owner
	NewOwner       fsroot.Owner
}

func (d *FileDiff) Render(w io.Writer) {
	switch {
	case d.Create:
		fmt.Fprintf(w, "create %s (mode %04o, owner %d:%d, %d bytes)\n", d.Path, d.NewMode, d.NewOwner.UID, d.NewOwner.GID, len(d.New))
		if !d.Secret {
			io.WriteString(w, unifiedDiff(d.Path, nil, d.New))
		}
		return
	case d.ContentChanged:
		fmt.Fprintf(w, "update %s\n", d.Path)
		if d.Secret {
			fmt.Fprintf(w, "(secret content differs)\n")
		} else {
			io.WriteString(w, unifiedDiff(d.Path, d.Old, d.New))
		}
	}
	if d.OldMode != d.NewMode && !d.Create {
		fmt.Fprintf(w, "mode %s: %04o -> %04o\n", d.Path, d.OldMode, d.NewMode)
	}
	if d.OldOwner != d.NewOwner && !d.Create {
		fmt.Fprintf(w, "owner %s: %d:%d -> %d:%d\n", d.Path, d.OldOwner.UID, d.OldOwner.GID, d.NewOwner.UID, d.NewOwner.GID)
	}
}

func (t *File) Find(ctx context.Context, env *engine.Env) (engine.Diff, error) {
	d, err := findFile(env, t.Path, t.Content, t.Mode, t.Owner, t.Secret)
	if d == nil || err != nil {
		return nil, err
	}
	return d, nil
}

func findFile(env *engine.Env, path string, content []byte, mode fs.FileMode, owner fsroot.Owner, secret bool) (*FileDiff, error) {
	d := &FileDiff{Path: path, New: content, NewMode: mode, NewOwner: owner, Secret: secret}
	fi, err := env.FS.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		d.Create = true
		return d, nil
	}
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		d.Create = true // replaced by a regular file
		return d, nil
	}
	d.OldMode = fi.Mode().Perm()
	d.OldOwner = OwnerOf(fi)
	if owner.UID < 0 {
		d.NewOwner.UID = d.OldOwner.UID
	}
	if owner.GID < 0 {
		d.NewOwner.GID = d.OldOwner.GID
	}
	if int64(len(content)) != fi.Size() {
		d.ContentChanged = true
	} else {
		old, err := env.FS.ReadFile(path)
		if err != nil {
			return nil, err
		}
		d.ContentChanged = !bytes.Equal(old, content)
	}
	if d.ContentChanged {
		old, err := env.FS.ReadFile(path)
		if err != nil {
			return nil, err
		}
		d.Old = old
	}
	if !d.ContentChanged && d.OldMode == d.NewMode && d.OldOwner == d.NewOwner {
		return nil, nil
	}
	return d, nil
}

// OwnerOf is fsroot.OwnerOf.
func OwnerOf(fi fs.FileInfo) fsroot.Owner { return fsroot.OwnerOf(fi) }

func (t *File) Apply(ctx context.Context, env *engine.Env, d engine.Diff) error {
	return applyFile(env, d.(*FileDiff))
}

func applyFile(env *engine.Env, d *FileDiff) error {
	if d.Create || d.ContentChanged {
		return env.FS.WriteFile(d.Path, d.New, d.NewMode, d.NewOwner)
	}
	if d.OldMode != d.NewMode {
		if err := env.FS.Chmod(d.Path, d.NewMode); err != nil {
			return err
		}
	}
	if d.OldOwner != d.NewOwner {
		return env.FS.Chown(d.Path, d.NewOwner)
	}
	return nil
}

// Directory is a directory with mode and owner.
type Directory struct {
	Path  string
	Mode  fs.FileMode
	Owner fsroot.Owner
	Needs []string
}

func (t *Directory) ID() string          { return "dir:" + t.Path }
func (t *Directory) Deps() []string      { return t.Needs }
func (t *Directory) Phase() engine.Phase { return engine.PhaseBoot }

// DirDiff is the difference for a Directory.
type DirDiff struct {
	Path               string
	Create             bool
	OldMode, NewMode   fs.FileMode
	OldOwner, NewOwner fsroot.Owner
}

func (d *DirDiff) Render(w io.Writer) {
	if d.Create {
		fmt.Fprintf(w, "mkdir %s (mode %04o, owner %d:%d)\n", d.Path, d.NewMode, d.NewOwner.UID, d.NewOwner.GID)
		return
	}
	if d.OldMode != d.NewMode {
		fmt.Fprintf(w, "mode %s: %04o -> %04o\n", d.Path, d.OldMode, d.NewMode)
	}
	if d.OldOwner != d.NewOwner {
		fmt.Fprintf(w, "owner %s: %d:%d -> %d:%d\n", d.Path, d.OldOwner.UID, d.OldOwner.GID, d.NewOwner.UID, d.NewOwner.GID)
	}
}

func (t *Directory) Find(ctx context.Context, env *engine.Env) (engine.Diff, error) {
	d := &DirDiff{Path: t.Path, NewMode: t.Mode, NewOwner: t.Owner}
	fi, err := env.FS.Lstat(t.Path)
	if errors.Is(err, fs.ErrNotExist) {
		d.Create = true
		return d, nil
	}
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, &engine.Permanent{Err: fmt.Errorf("%s exists and is not a directory", t.Path)}
	}
	d.OldMode, d.OldOwner = fi.Mode().Perm(), OwnerOf(fi)
	if d.OldMode == d.NewMode && d.OldOwner == d.NewOwner {
		return nil, nil
	}
	return d, nil
}

func (t *Directory) Apply(ctx context.Context, env *engine.Env, diff engine.Diff) error {
	d := diff.(*DirDiff)
	if d.Create {
		if err := env.FS.MkdirAll(d.Path, d.NewMode); err != nil {
			return err
		}
	}
	if err := env.FS.Chmod(d.Path, d.NewMode); err != nil {
		return err
	}
	return env.FS.Chown(d.Path, d.NewOwner)
}

// Symlink is a symbolic link.
type Symlink struct {
	Path   string
	Target string
	Needs  []string
}

func (t *Symlink) ID() string          { return "symlink:" + t.Path }
func (t *Symlink) Deps() []string      { return t.Needs }
func (t *Symlink) Phase() engine.Phase { return engine.PhaseBoot }

// SymlinkDiff is the difference for a Symlink.
type SymlinkDiff struct{ Path, Old, New string }

func (d *SymlinkDiff) Render(w io.Writer) {
	if d.Old == "" {
		fmt.Fprintf(w, "symlink %s -> %s\n", d.Path, d.New)
		return
	}
	fmt.Fprintf(w, "symlink %s -> %s (was -> %s)\n", d.Path, d.New, d.Old)
}

func (t *Symlink) Find(ctx context.Context, env *engine.Env) (engine.Diff, error) {
	cur, err := env.FS.Readlink(t.Path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		if fi, serr := env.FS.Lstat(t.Path); serr == nil && fi.IsDir() {
			return nil, &engine.Permanent{Err: fmt.Errorf("%s is a directory, not a symlink", t.Path)}
		}
	}
	if cur == t.Target {
		return nil, nil
	}
	return &SymlinkDiff{Path: t.Path, Old: cur, New: t.Target}, nil
}

func (t *Symlink) Apply(ctx context.Context, env *engine.Env, d engine.Diff) error {
	return env.FS.Symlink(t.Target, t.Path)
}
