// Package state is nodeup's memory between runs, kept in
// <root>/var/lib/nodeup/state.json: the content hashes of each service's
// inputs at the time it was last (re)started, so that a re-run after a crash
// still knows a restart is owed, and a cache of file hashes keyed by
// size, inode and change time, so that a no-op run need not re-read binaries.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"sync"
	"syscall"

	"github.com/kopsnode/agents/nodeup/fsroot"
)

// Path is where the state lives inside the root.
const Path = "/var/lib/nodeup/state.json"

// UnitRecord is what a service was last started with.
type UnitRecord struct {
	// Inputs maps each input (the unit file itself and every declared input
	// path) to its sha256 when the service was last started or restarted.
	Inputs map[string]string `json:"inputs"`
}

type hashEntry struct {
	Size  int64  `json:"size"`
	Ino   uint64 `json:"ino"`
	Ctime int64  `json:"ctime"`
	Mtime int64  `json:"mtime"`
	Hash  string `json:"sha256"`
}

type data struct {
	Units  map[string]UnitRecord `json:"units"`
	Hashes map[string]hashEntry  `json:"hashes,omitempty"`
}

// State is loaded once per run and saved at the end (and after each
// restart). It is safe for concurrent use by tasks.
type State struct {
	fs *fsroot.FS
	mu sync.Mutex // guards d and dirty
	d  data
	// dirty is set when d changed since load or the last save.
	dirty bool
}

// Load reads the state; a missing file is an empty state, a corrupt one is
// reported and replaced by an empty state (it only ever costs a restart).
func Load(f *fsroot.FS) (*State, error) {
	s := &State{fs: f, d: data{Units: map[string]UnitRecord{}, Hashes: map[string]hashEntry{}}}
	b, err := f.ReadFile(Path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("reading %s: %w", Path, err)
	}
	var d data
	if err := json.Unmarshal(b, &d); err != nil {
		return s, fmt.Errorf("decoding %s (starting from an empty state): %w", Path, err)
	}
	if d.Units != nil {
		s.d.Units = d.Units
	}
	if d.Hashes != nil {
		s.d.Hashes = d.Hashes
	}
	return s, nil
}

// Unit returns a service's record.
func (s *State) Unit(name string) (UnitRecord, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.d.Units[name]
	return r, ok
}

// SetUnit records what a service was started with and saves the state, so
// that a crash right after does not cost a second restart.
func (s *State) SetUnit(name string, r UnitRecord) error {
	s.mu.Lock()
	s.d.Units[name] = r
	s.dirty = true
	s.mu.Unlock()
	return s.Save()
}

// Save writes the state atomically when it changed.
func (s *State) Save() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.dirty {
		return nil
	}
	b, err := json.MarshalIndent(s.d, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding state: %w", err)
	}
	if err := s.fs.WriteFile(Path, append(b, '\n'), 0o600, fsroot.RootOwner); err != nil {
		return err
	}
	s.dirty = false
	return nil
}

// HashFile returns the sha256 of a file inside the root, reusing the cached
// hash when size, inode, mtime and ctime are unchanged. A missing file
// returns an error wrapping fs.ErrNotExist.
func (s *State) HashFile(p string) (string, error) {
	fi, err := s.fs.Stat(p)
	if err != nil {
		return "", err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return s.fs.HashFile(p)
	}
	key := hashEntry{Size: fi.Size(), Ino: st.Ino, Ctime: st.Ctim.Nano(), Mtime: st.Mtim.Nano()}
	s.mu.Lock()
	e, ok := s.d.Hashes[p]
	s.mu.Unlock()
	if ok && e.Size == key.Size && e.Ino == key.Ino && e.Ctime == key.Ctime && e.Mtime == key.Mtime {
		return e.Hash, nil
	}
	h, err := s.fs.HashFile(p)
	if err != nil {
		return "", err
	}
	// Only cache files large enough to matter; small files are cheap to hash.
	if fi.Size() >= 64<<10 {
		key.Hash = h
		s.mu.Lock()
		s.d.Hashes[p] = key
		s.dirty = true
		s.mu.Unlock()
	}
	return h, nil
}

// UnitNames lists recorded services, sorted.
func (s *State) UnitNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.d.Units {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
