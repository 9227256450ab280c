package tasks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"

	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/fsroot"
)

// Install puts a file from a cached asset at Path (a binary into
// /usr/local/bin, a CNI plugin into /opt/cni/bin). Member names a file
// inside an extracted archive.
type Install struct {
	Path   string
	Asset  *Asset
	Member string
	Mode   fs.FileMode
}

func (t *Install) ID() string          { return FileID(t.Path) }
func (t *Install) Deps() []string      { return []string{t.Asset.ID()} }
func (t *Install) Phase() engine.Phase { return engine.PhaseBoot }

func (t *Install) source() string {
	if t.Member == "" {
		return t.Asset.CachePath()
	}
	return path.Join(t.Asset.CachePath(), path.Clean("/"+t.Member))
}

// InstallDiff says what Install will do.
type InstallDiff struct {
	Path, From     string
	Reason         string
	OldMode, Mode  fs.FileMode
	ContentChanged bool
}

func (d *InstallDiff) Render(w io.Writer) {
	if d.ContentChanged {
		fmt.Fprintf(w, "install %s -> %s (mode %04o; %s)\n", d.From, d.Path, d.Mode, d.Reason)
		return
	}
	fmt.Fprintf(w, "mode %s: %04o -> %04o\n", d.Path, d.OldMode, d.Mode)
}

func (t *Install) Find(ctx context.Context, env *engine.Env) (engine.Diff, error) {
	d := &InstallDiff{Path: t.Path, From: t.source(), Mode: t.Mode}
	var want string
	if t.Member == "" {
		want = t.Asset.SHA256
	} else if h, err := env.State.HashFile(t.source()); err == nil {
		want = h
	}
	fi, err := env.FS.Lstat(t.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		d.ContentChanged, d.Reason = true, "missing"
		return d, nil
	case err != nil:
		return nil, err
	case !fi.Mode().IsRegular():
		d.ContentChanged, d.Reason = true, "not a regular file"
		return d, nil
	}
	d.OldMode = fi.Mode().Perm()
	got, err := env.State.HashFile(t.Path)
	if err != nil {
		return nil, err
	}
	if want == "" {
		d.ContentChanged, d.Reason = true, "asset not yet in the cache"
		return d, nil
	}
	if got != want {
		d.ContentChanged, d.Reason = true, fmt.Sprintf("sha256 %s, want %s", short(got), short(want))
		return d, nil
	}
	if d.OldMode != d.Mode {
		return d, nil
	}
	return nil, nil
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func (t *Install) Apply(ctx context.Context, env *engine.Env, diff engine.Diff) error {
	d := diff.(*InstallDiff)
	if !d.ContentChanged {
		return env.FS.Chmod(t.Path, t.Mode)
	}
	src, err := env.FS.Open(t.source())
	if errors.Is(err, fs.ErrNotExist) {
		return &engine.Permanent{Err: fmt.Errorf("installing %s: asset %s is not in the cache at %s (run the bake phase, or --phase all)", t.Path, t.Asset.Name, t.source())}
	}
	if err != nil {
		return fmt.Errorf("installing %s: %w", t.Path, err)
	}
	defer src.Close()
	return env.FS.WriteFrom(t.Path, src, t.Mode, fsroot.RootOwner)
}
