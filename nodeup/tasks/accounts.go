package tasks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"
	"sync"

	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/fsroot"
)

// Accounts serialises edits of the account databases (/etc/passwd, group,
// shadow, gshadow) by the User and Group tasks of one graph. nodeup edits
// them directly rather than calling useradd: that works the same under
// --root and on images without the shadow utilities, and each file is
// replaced atomically.
type Accounts struct {
	mu sync.Mutex // guards edits of the account files
}

// Group is a system group.
type Group struct {
	Name     string
	Accounts *Accounts
}

func (t *Group) ID() string          { return "group:" + t.Name }
func (t *Group) Deps() []string      { return nil }
func (t *Group) Phase() engine.Phase { return engine.PhaseBoot }

// User is a system user with its primary group, no password and no login.
type User struct {
	Name     string
	Group    string // primary group, must be a Group task
	Home     string
	Shell    string // default /usr/sbin/nologin
	Accounts *Accounts
}

func (t *User) ID() string          { return "user:" + t.Name }
func (t *User) Deps() []string      { return []string{"group:" + t.Group} }
func (t *User) Phase() engine.Phase { return engine.PhaseBoot }

// AccountDiff is a line to add.
type AccountDiff struct {
	File string
	Line string
}

func (d *AccountDiff) Render(w io.Writer) { fmt.Fprintf(w, "add to %s: %s\n", d.File, d.Line) }

type dbLine []string

func readDB(f *fsroot.FS, p string) ([]dbLine, error) {
	b, err := f.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []dbLine
	for _, l := range strings.Split(string(b), "\n") {
		if l == "" {
			continue
		}
		out = append(out, strings.Split(l, ":"))
	}
	return out, nil
}

func find(db []dbLine, name string) dbLine {
	for _, l := range db {
		if len(l) > 0 && l[0] == name {
			return l
		}
	}
	return nil
}

// freeID returns the highest free id in the system range 100..999 (as
// useradd --system does), looking at both passwd and group.
func freeID(dbs ...[]dbLine) (int, error) {
	used := map[int]bool{}
	for _, db := range dbs {
		for _, l := range db {
			if len(l) > 2 {
				if n, err := strconv.Atoi(l[2]); err == nil {
					used[n] = true
				}
			}
		}
	}
	for id := 999; id >= 100; id-- {
		if !used[id] {
			return id, nil
		}
	}
	return 0, errors.New("no free system id in 100-999")
}

func appendLine(f *fsroot.FS, p, line string, mode fs.FileMode) error {
	b, err := f.ReadFile(p)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	owner := fsroot.RootOwner
	if fi, err := f.Stat(p); err == nil {
		mode, owner = fi.Mode().Perm(), fsroot.OwnerOf(fi)
	}
	s := string(b)
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return f.WriteFile(p, []byte(s+line+"\n"), mode, owner)
}

func (t *Group) Find(ctx context.Context, env *engine.Env) (engine.Diff, error) {
	g, err := readDB(env.FS, "/etc/group")
	if err != nil {
		return nil, err
	}
	if find(g, t.Name) != nil {
		return nil, nil
	}
	return &AccountDiff{File: "/etc/group", Line: t.Name + ":x:<next free system gid>:"}, nil
}

func (t *Group) Apply(ctx context.Context, env *engine.Env, _ engine.Diff) error {
	t.Accounts.mu.Lock()
	defer t.Accounts.mu.Unlock()
	g, err := readDB(env.FS, "/etc/group")
	if err != nil {
		return err
	}
	if find(g, t.Name) != nil {
		return nil
	}
	id, err := freeID(g)
	if err != nil {
		return &engine.Permanent{Err: fmt.Errorf("adding group %s: %w", t.Name, err)}
	}
	if env.FS.Exists("/etc/gshadow") {
		if err := appendLine(env.FS, "/etc/gshadow", t.Name+":!::", 0o640); err != nil {
			return err
		}
	}
	return appendLine(env.FS, "/etc/group", fmt.Sprintf("%s:x:%d:", t.Name, id), 0o644)
}

func (t *User) Find(ctx context.Context, env *engine.Env) (engine.Diff, error) {
	p, err := readDB(env.FS, "/etc/passwd")
	if err != nil {
		return nil, err
	}
	if find(p, t.Name) != nil {
		return nil, nil
	}
	return &AccountDiff{File: "/etc/passwd", Line: fmt.Sprintf("%s:x:<next free system uid>:<gid of %s>::%s:%s", t.Name, t.Group, t.Home, t.shell())}, nil
}

func (t *User) shell() string {
	if t.Shell == "" {
		return "/usr/sbin/nologin"
	}
	return t.Shell
}

func (t *User) Apply(ctx context.Context, env *engine.Env, _ engine.Diff) error {
	t.Accounts.mu.Lock()
	defer t.Accounts.mu.Unlock()
	p, err := readDB(env.FS, "/etc/passwd")
	if err != nil {
		return err
	}
	if find(p, t.Name) != nil {
		return nil
	}
	g, err := readDB(env.FS, "/etc/group")
	if err != nil {
		return err
	}
	gl := find(g, t.Group)
	if gl == nil || len(gl) < 3 {
		return fmt.Errorf("adding user %s: group %s not in /etc/group", t.Name, t.Group)
	}
	id, err := freeID(p)
	if err != nil {
		return &engine.Permanent{Err: fmt.Errorf("adding user %s: %w", t.Name, err)}
	}
	if env.FS.Exists("/etc/shadow") {
		if err := appendLine(env.FS, "/etc/shadow", t.Name+":!*:::::::", 0o640); err != nil {
			return err
		}
	}
	return appendLine(env.FS, "/etc/passwd", fmt.Sprintf("%s:x:%d:%s::%s:%s", t.Name, id, gl[2], t.Home, t.shell()), 0o644)
}
