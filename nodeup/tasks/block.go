package tasks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/fsroot"
)

// ManagedBlock keeps a block of lines between begin and end markers in a
// file that others also write (/etc/hosts); content outside the markers is
// left untouched.
type ManagedBlock struct {
	Path string
	// Name tells blocks in one file apart: "# BEGIN nodeup <Name>".
	Name    string
	Content string
	Needs   []string
}

func (t *ManagedBlock) ID() string          { return "block:" + t.Path + "#" + t.Name }
func (t *ManagedBlock) Deps() []string      { return t.Needs }
func (t *ManagedBlock) Phase() engine.Phase { return engine.PhaseBoot }

func (t *ManagedBlock) markers() (string, string) {
	return "# BEGIN nodeup " + t.Name, "# END nodeup " + t.Name
}

// SpliceBlock returns old with the named block replaced by content (or
// appended when absent). Unterminated blocks are an error, so that a
// half-edited file is not made worse.
func SpliceBlock(old, begin, end, content string) (string, error) {
	block := begin + "\n"
	if content != "" {
		block += strings.TrimSuffix(content, "\n") + "\n"
	}
	block += end + "\n"
	lines := strings.SplitAfter(old, "\n")
	bi, ei := -1, -1
	for i, l := range lines {
		switch strings.TrimRight(l, "\r\n") {
		case begin:
			if bi < 0 {
				bi = i
			}
		case end:
			if bi >= 0 && ei < 0 {
				ei = i
			}
		}
	}
	if bi >= 0 && ei < 0 {
		return "", fmt.Errorf("%q has no matching %q", begin, end)
	}
	if bi < 0 {
		if old != "" && !strings.HasSuffix(old, "\n") {
			old += "\n"
		}
		return old + block, nil
	}
	return strings.Join(lines[:bi], "") + block + strings.Join(lines[ei+1:], ""), nil
}

func (t *ManagedBlock) Find(ctx context.Context, env *engine.Env) (engine.Diff, error) {
	old, err := env.FS.ReadFile(t.Path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	b, e := t.markers()
	nw, err := SpliceBlock(string(old), b, e, t.Content)
	if err != nil {
		return nil, &engine.Permanent{Err: fmt.Errorf("%s: %w", t.Path, err)}
	}
	if nw == string(old) {
		return nil, nil
	}
	return &BlockDiff{Path: t.Path, Old: old, New: []byte(nw)}, nil
}

// BlockDiff is the difference for a ManagedBlock.
type BlockDiff struct {
	Path     string
	Old, New []byte
}

func (d *BlockDiff) Render(w io.Writer) {
	fmt.Fprintf(w, "update block in %s\n", d.Path)
	io.WriteString(w, unifiedDiff(d.Path, d.Old, d.New))
}

func (t *ManagedBlock) Apply(ctx context.Context, env *engine.Env, d engine.Diff) error {
	// Re-read: another writer may have changed the file since Find.
	old, err := env.FS.ReadFile(t.Path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	b, e := t.markers()
	nw, err := SpliceBlock(string(old), b, e, t.Content)
	if err != nil {
		return &engine.Permanent{Err: fmt.Errorf("%s: %w", t.Path, err)}
	}
	mode, owner := fs.FileMode(0o644), fsroot.RootOwner
	if fi, err := env.FS.Stat(t.Path); err == nil {
		mode, owner = fi.Mode().Perm(), OwnerOf(fi)
	}
	return env.FS.WriteFile(t.Path, []byte(nw), mode, owner)
}
