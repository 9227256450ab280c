package tasks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"path"
	"slices"
	"sort"

	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/fsroot"
	"github.com/kopsnode/agents/nodeup/state"
	units "github.com/kopsnode/agents/systemd-units"
)

// UnitID is the task ID of a service.
func UnitID(name string) string { return "unit:" + name }

// Service writes a unit file, enables the unit and keeps it running. It
// restarts the unit exactly when the unit file or one of its declared inputs
// (binary, config files, environment files) differs from what the unit was
// last started with, as recorded in nodeup's state file.
type Service struct {
	Name    string // kubelet.service
	Content string // the unit file
	// Inputs are paths whose content the running service depends on. The
	// tasks writing them must be in Needs (as FileID(path)).
	Inputs []string
	Needs  []string
	// NoStart writes and enables the unit but never starts or restarts it
	// (nodeup's own unit: it is running when nodeup runs).
	NoStart bool
	// RestartOnly never starts the unit but restarts it when it runs and
	// its inputs changed (etcd-manager units, which protokube starts).
	RestartOnly bool
}

func (t *Service) ID() string          { return UnitID(t.Name) }
func (t *Service) Deps() []string      { return t.Needs }
func (t *Service) Phase() engine.Phase { return engine.PhaseBoot }
func (t *Service) unitPath() string    { return path.Join(units.Dir, t.Name) }

// ServiceDiff is what a Service will do.
type ServiceDiff struct {
	Name     string
	Unit     *FileDiff // nil when the unit file is as wanted
	Links    []units.Link
	Reload   bool
	Start    bool
	Restart  bool
	Reasons  []string // why a restart is due
	Skipped  string   // why start/restart is not done (not a live systemd)
	Record   state.UnitRecord
	recordOK bool // Record changed and must be saved
}

func (d *ServiceDiff) Render(w io.Writer) {
	if d.Unit != nil {
		d.Unit.Render(w)
	}
	if d.Reload {
		fmt.Fprintln(w, "systemd daemon-reload")
	}
	for _, l := range d.Links {
		fmt.Fprintf(w, "enable %s (symlink %s)\n", d.Name, l.Path)
	}
	switch {
	case d.Skipped != "" && (d.Start || d.Restart):
		fmt.Fprintf(w, "start/restart %s skipped: %s\n", d.Name, d.Skipped)
	case d.Start:
		fmt.Fprintf(w, "start %s\n", d.Name)
	case d.Restart:
		fmt.Fprintf(w, "restart %s (changed: %v)\n", d.Name, d.Reasons)
	}
}

func (t *Service) Find(ctx context.Context, env *engine.Env) (engine.Diff, error) {
	d := &ServiceDiff{Name: t.Name}
	fd, err := findFile(env, t.unitPath(), []byte(t.Content), 0o644, fsroot.RootOwner, false)
	if err != nil {
		return nil, err
	}
	d.Unit = fd
	for _, l := range units.EnableLinks(t.Name, t.Content) {
		if cur, err := env.FS.Readlink(l.Path); err != nil || cur != l.Target {
			d.Links = append(d.Links, l)
		}
	}
	live := env.Systemd != nil
	if !live {
		d.Skipped = "not a live systemd (--root is not / or systemd is not running)"
	}
	d.Reload = fd != nil && live
	if t.NoStart {
		if d.Unit == nil && len(d.Links) == 0 {
			return nil, nil
		}
		return d, nil
	}

	// What the unit would be started with now.
	cur := state.UnitRecord{Inputs: map[string]string{t.unitPath(): fsroot.HashBytes([]byte(t.Content))}}
	for _, in := range t.Inputs {
		h, err := env.State.HashFile(in)
		if errors.Is(err, fs.ErrNotExist) {
			h = "missing"
		} else if err != nil {
			return nil, fmt.Errorf("hashing input %s of %s: %w", in, t.Name, err)
		}
		cur.Inputs[in] = h
	}
	d.Record = cur
	rec, known := env.State.Unit(t.Name)
	if !known || !maps.Equal(rec.Inputs, cur.Inputs) {
		d.recordOK = true
		for _, k := range slices.Sorted(maps.Keys(cur.Inputs)) {
			if rec.Inputs[k] != cur.Inputs[k] {
				d.Reasons = append(d.Reasons, k)
			}
		}
	}
	if env.DryRun {
		// Inputs not written yet: predict from the plan of their tasks.
		for _, in := range t.Inputs {
			if env.Changed(FileID(in)) && !slices.Contains(d.Reasons, in) {
				d.Reasons = append(d.Reasons, in)
			}
		}
		if fd != nil && !slices.Contains(d.Reasons, t.unitPath()) {
			d.Reasons = append(d.Reasons, t.unitPath())
		}
		sort.Strings(d.Reasons)
	}
	active := false
	if live {
		st, err := env.Systemd.ActiveState(ctx, t.Name)
		if err != nil {
			return nil, err
		}
		active = st == "active" || st == "activating" || st == "reloading"
		d.Start = !active && !t.RestartOnly
		d.Restart = active && len(d.Reasons) > 0
	} else {
		// Record what an enabled unit will start with at boot; the start
		// itself is skipped.
		d.Start = len(d.Reasons) > 0 && !t.RestartOnly
	}
	if d.Unit == nil && len(d.Links) == 0 && !d.Reload && !d.recordOK && (!live || (!d.Start && !d.Restart)) {
		return nil, nil
	}
	return d, nil
}

func (t *Service) Apply(ctx context.Context, env *engine.Env, diff engine.Diff) error {
	d := diff.(*ServiceDiff)
	live := d.Skipped == ""
	if d.Unit != nil {
		if err := applyFile(env, d.Unit); err != nil {
			return err
		}
	}
	if d.Reload {
		if err := env.Systemd.DaemonReload(ctx); err != nil {
			return err
		}
	}
	if len(d.Links) > 0 {
		if live {
			if err := env.Systemd.Enable(ctx, t.Name); err != nil {
				return err
			}
		} else {
			for _, l := range d.Links {
				if err := env.FS.Symlink(l.Target, l.Path); err != nil {
					return fmt.Errorf("enabling %s: %w", t.Name, err)
				}
			}
		}
	}
	if t.NoStart {
		return nil
	}
	if live {
		switch {
		case d.Start:
			env.Log.Info("starting unit", "unit", t.Name)
			if err := env.Systemd.Start(ctx, t.Name); err != nil {
				return err
			}
		case d.Restart:
			env.Log.Info("restarting unit", "unit", t.Name, "changed", d.Reasons)
			if err := env.Systemd.Restart(ctx, t.Name); err != nil {
				return err
			}
		}
	}
	if d.recordOK || d.Start || d.Restart {
		return env.State.SetUnit(t.Name, d.Record)
	}
	return nil
}
