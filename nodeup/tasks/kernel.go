package tasks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/fsroot"
)

// Sysctl writes a sysctl.d file and, on a live root, sets the values now
// through /proc/sys (systemd-sysctl applies the file on later boots).
type Sysctl struct {
	Path   string // /etc/sysctl.d/99-kubernetes.conf
	Values map[string]string
	// ProcDir is /proc/sys; tests point it elsewhere.
	ProcDir string
}

func (t *Sysctl) ID() string          { return FileID(t.Path) }
func (t *Sysctl) Deps() []string      { return nil }
func (t *Sysctl) Phase() engine.Phase { return engine.PhaseBoot }

// Content renders the sysctl.d file, sorted by key.
func (t *Sysctl) Content() []byte {
	keys := make([]string, 0, len(t.Values))
	for k := range t.Values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# Managed by nodeup.\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, t.Values[k])
	}
	return []byte(b.String())
}

func (t *Sysctl) procDir() string {
	if t.ProcDir != "" {
		return t.ProcDir
	}
	return "/proc/sys"
}

// SysctlDiff is what a Sysctl will do.
type SysctlDiff struct {
	File *FileDiff
	Set  [][2]string // key, value to set now
	Note string
}

func (d *SysctlDiff) Render(w io.Writer) {
	if d.File != nil {
		d.File.Render(w)
	}
	for _, kv := range d.Set {
		fmt.Fprintf(w, "sysctl %s=%s\n", kv[0], kv[1])
	}
	if d.Note != "" {
		fmt.Fprintln(w, d.Note)
	}
}

func (t *Sysctl) Find(ctx context.Context, env *engine.Env) (engine.Diff, error) {
	fd, err := findFile(env, t.Path, t.Content(), 0o644, fsroot.RootOwner, false)
	if err != nil {
		return nil, err
	}
	d := &SysctlDiff{File: fd}
	if env.Live() {
		keys := make([]string, 0, len(t.Values))
		for k := range t.Values {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := filepath.Join(t.procDir(), strings.ReplaceAll(k, ".", "/"))
			cur, err := os.ReadFile(p)
			if err != nil {
				// Unknown here (module not loaded yet, or hidden in a
				// container): the file applies it when it can.
				d.Note += fmt.Sprintf("%s not settable now (%v); left to systemd-sysctl\n", k, err)
				continue
			}
			if strings.Join(strings.Fields(string(cur)), " ") == strings.Join(strings.Fields(t.Values[k]), " ") {
				continue
			}
			if err := syscall.Access(p, 2); err != nil {
				d.Note += fmt.Sprintf("%s is %s, cannot be set now (%v); left to systemd-sysctl\n", k, strings.TrimSpace(string(cur)), err)
				continue
			}
			d.Set = append(d.Set, [2]string{k, t.Values[k]})
		}
	}
	if fd == nil && len(d.Set) == 0 {
		return nil, nil
	}
	return d, nil
}

func (t *Sysctl) Apply(ctx context.Context, env *engine.Env, diff engine.Diff) error {
	d := diff.(*SysctlDiff)
	if d.File != nil {
		if err := applyFile(env, d.File); err != nil {
			return err
		}
	}
	var errs []error
	for _, kv := range d.Set {
		p := filepath.Join(t.procDir(), strings.ReplaceAll(kv[0], ".", "/"))
		if err := os.WriteFile(p, []byte(kv[1]+"\n"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("setting sysctl %s=%s: %w", kv[0], kv[1], err))
		}
	}
	if len(errs) > 0 {
		return &engine.Warning{Err: errors.Join(errs...)}
	}
	return nil
}

// KernelModules writes a modules-load.d file and, on a live root, loads the
// modules that are not loaded yet with modprobe.
type KernelModules struct {
	Path    string // /etc/modules-load.d/kubernetes.conf
	Modules []string
	// SysModule is /sys/module; tests point it elsewhere.
	SysModule string
}

func (t *KernelModules) ID() string          { return FileID(t.Path) }
func (t *KernelModules) Deps() []string      { return nil }
func (t *KernelModules) Phase() engine.Phase { return engine.PhaseBoot }

// Content renders the modules-load.d file.
func (t *KernelModules) Content() []byte {
	mods := append([]string(nil), t.Modules...)
	sort.Strings(mods)
	return []byte("# Managed by nodeup.\n" + strings.Join(mods, "\n") + "\n")
}

// ModulesDiff is what KernelModules will do.
type ModulesDiff struct {
	File *FileDiff
	Load []string
	Note string
}

func (d *ModulesDiff) Render(w io.Writer) {
	if d.File != nil {
		d.File.Render(w)
	}
	for _, m := range d.Load {
		fmt.Fprintf(w, "modprobe %s\n", m)
	}
	if d.Note != "" {
		fmt.Fprintln(w, d.Note)
	}
}

func (t *KernelModules) Find(ctx context.Context, env *engine.Env) (engine.Diff, error) {
	fd, err := findFile(env, t.Path, t.Content(), 0o644, fsroot.RootOwner, false)
	if err != nil {
		return nil, err
	}
	d := &ModulesDiff{File: fd}
	if env.Live() {
		sys := t.SysModule
		if sys == "" {
			sys = "/sys/module"
		}
		for _, m := range t.Modules {
			if _, err := os.Stat(filepath.Join(sys, strings.ReplaceAll(m, "-", "_"))); err == nil {
				continue
			}
			d.Load = append(d.Load, m)
		}
		if len(d.Load) > 0 {
			if lp, ok := env.Exec.(interface{ LookPath(string) error }); ok && lp.LookPath("modprobe") != nil {
				d.Note = fmt.Sprintf("cannot load %v now: modprobe not found; left to systemd-modules-load", d.Load)
				d.Load = nil
			}
		}
	}
	if fd == nil && len(d.Load) == 0 {
		return nil, nil
	}
	return d, nil
}

func (t *KernelModules) Apply(ctx context.Context, env *engine.Env, diff engine.Diff) error {
	d := diff.(*ModulesDiff)
	if d.File != nil {
		if err := applyFile(env, d.File); err != nil {
			return err
		}
	}
	var errs []error
	for _, m := range d.Load {
		if out, err := env.Exec.Run(ctx, "modprobe", m); err != nil {
			errs = append(errs, fmt.Errorf("modprobe %s: %v: %s", m, err, strings.TrimSpace(string(out))))
		}
	}
	if len(errs) > 0 {
		// The file loads them on the next boot; a container cannot load them.
		return &engine.Warning{Err: errors.Join(errs...)}
	}
	return nil
}
