package tasks

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"

	"github.com/kopsnode/agents/nodeup/engine"
)

// PackagesID is the ID of the packages task.
const PackagesID = "packages"

// PackageManager is one OS package manager (apt, dnf). Implementations find
// what is installed by reading the root's package database only, and install
// through env.Exec, inside the root by chroot when it is not "/".
type PackageManager interface {
	Name() string
	// Missing returns the packages not installed, and whether the package
	// database needs repair first (an interrupted dpkg).
	Missing(ctx context.Context, env *engine.Env, pkgs []string) (missing []string, repair bool, err error)
	Repair(ctx context.Context, env *engine.Env) error
	Install(ctx context.Context, env *engine.Env, pkgs []string) error
}

// DetectPackageManager reads <root>/etc/os-release.
func DetectPackageManager(env *engine.Env) (PackageManager, error) {
	b, err := env.FS.ReadFile("/etc/os-release")
	if err != nil {
		return nil, fmt.Errorf("detecting the distribution: %w", err)
	}
	id, like := "", ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		v = strings.Trim(v, `"'`)
		switch k {
		case "ID":
			id = v
		case "ID_LIKE":
			like = v
		}
	}
	for _, x := range append([]string{id}, strings.Fields(like)...) {
		switch x {
		case "debian", "ubuntu":
			return Apt{}, nil
		case "fedora", "rhel", "centos", "rocky", "almalinux", "amzn":
			return Dnf{}, nil
		}
	}
	return nil, fmt.Errorf("/etc/os-release: distribution ID=%q ID_LIKE=%q is not supported (apt or dnf families)", id, like)
}

// chrootArgs prefixes a command with chroot when the root is not "/".
func chrootArgs(env *engine.Env, name string, args ...string) (string, []string) {
	if env.Live() {
		return name, args
	}
	return "chroot", append([]string{env.FS.Root(), name}, args...)
}

// Packages installs OS packages (one task, because package managers hold a
// global lock).
type Packages struct {
	Names []string
	// Manager is detected from os-release when nil.
	Manager PackageManager
}

func (t *Packages) ID() string          { return PackagesID }
func (t *Packages) Deps() []string      { return nil }
func (t *Packages) Phase() engine.Phase { return engine.PhaseBake }

// PackagesDiff is what Packages will do.
type PackagesDiff struct {
	Manager string
	Repair  bool
	Install []string
	Root    string
}

func (d *PackagesDiff) Render(w io.Writer) {
	if d.Repair {
		fmt.Fprintln(w, "dpkg --configure -a (interrupted dpkg run)")
	}
	in := ""
	if d.Root != "/" {
		in = " (chroot " + d.Root + ")"
	}
	fmt.Fprintf(w, "%s install %s%s\n", d.Manager, strings.Join(d.Install, " "), in)
}

func (t *Packages) manager(env *engine.Env) (PackageManager, error) {
	if t.Manager != nil {
		return t.Manager, nil
	}
	return DetectPackageManager(env)
}

func (t *Packages) Find(ctx context.Context, env *engine.Env) (engine.Diff, error) {
	m, err := t.manager(env)
	if err != nil {
		return nil, &engine.Permanent{Err: err}
	}
	missing, repair, err := m.Missing(ctx, env, t.Names)
	if err != nil {
		return nil, err
	}
	if len(missing) == 0 && !repair {
		return nil, nil
	}
	return &PackagesDiff{Manager: m.Name(), Repair: repair, Install: missing, Root: env.FS.Root()}, nil
}

func (t *Packages) Apply(ctx context.Context, env *engine.Env, diff engine.Diff) error {
	d := diff.(*PackagesDiff)
	m, err := t.manager(env)
	if err != nil {
		return err
	}
	if d.Repair {
		if err := m.Repair(ctx, env); err != nil {
			return err
		}
	}
	if len(d.Install) == 0 {
		return nil
	}
	return m.Install(ctx, env, d.Install)
}

// Apt is Debian's package manager.
type Apt struct{}

func (Apt) Name() string { return "apt" }

// Missing parses <root>/var/lib/dpkg/status; an interrupted run leaves files
// in <root>/var/lib/dpkg/updates.
func (Apt) Missing(ctx context.Context, env *engine.Env, pkgs []string) ([]string, bool, error) {
	installed := map[string]bool{}
	b, err := env.FS.ReadFile("/var/lib/dpkg/status")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	for _, para := range strings.Split(string(b), "\n\n") {
		name, status := "", ""
		for _, line := range strings.Split(para, "\n") {
			if v, ok := strings.CutPrefix(line, "Package: "); ok {
				name = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(line, "Status: "); ok {
				status = strings.TrimSpace(v)
			}
		}
		if name != "" && status == "install ok installed" {
			installed[name] = true
		}
	}
	var missing []string
	for _, p := range pkgs {
		if !installed[p] {
			missing = append(missing, p)
		}
	}
	sort.Strings(missing)
	repair := false
	if ents, err := env.FS.ReadDir("/var/lib/dpkg/updates"); err == nil && len(ents) > 0 {
		repair = true
	}
	return missing, repair, nil
}

func (Apt) Repair(ctx context.Context, env *engine.Env) error {
	name, args := chrootArgs(env, "dpkg", "--configure", "-a")
	if out, err := env.Exec.Run(ctx, name, args...); err != nil {
		return fmt.Errorf("repairing dpkg: %w: %s", err, tail(out))
	}
	return nil
}

func (Apt) Install(ctx context.Context, env *engine.Env, pkgs []string) error {
	name, args := chrootArgs(env, "apt-get", append([]string{"install", "-y", "--no-install-recommends", "-o", "Dpkg::Options::=--force-confold"}, pkgs...)...)
	if _, err := env.Exec.Run(ctx, name, args...); err == nil {
		return nil
	}
	// Lists may be stale or absent on a fresh image.
	un, uargs := chrootArgs(env, "apt-get", "update")
	if out, err := env.Exec.Run(ctx, un, uargs...); err != nil {
		return fmt.Errorf("apt-get update: %w: %s", err, tail(out))
	}
	if out, err := env.Exec.Run(ctx, name, args...); err != nil {
		return fmt.Errorf("installing %v: %w: %s", pkgs, err, tail(out))
	}
	return nil
}

// Dnf is the Fedora/RHEL package manager.
type Dnf struct{}

func (Dnf) Name() string { return "dnf" }

// Missing asks rpm (a read-only query of the root's database).
func (Dnf) Missing(ctx context.Context, env *engine.Env, pkgs []string) ([]string, bool, error) {
	var missing []string
	for _, p := range pkgs {
		if _, err := env.Exec.Run(ctx, "rpm", "--root", env.FS.Root(), "-q", p); err != nil {
			missing = append(missing, p)
		}
	}
	sort.Strings(missing)
	return missing, false, nil
}

func (Dnf) Repair(ctx context.Context, env *engine.Env) error { return nil }

func (Dnf) Install(ctx context.Context, env *engine.Env, pkgs []string) error {
	name, args := chrootArgs(env, "dnf", append([]string{"install", "-y"}, pkgs...)...)
	if out, err := env.Exec.Run(ctx, name, args...); err != nil {
		return fmt.Errorf("installing %v: %w: %s", pkgs, err, tail(out))
	}
	return nil
}

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 800 {
		s = "..." + s[len(s)-800:]
	}
	return s
}
