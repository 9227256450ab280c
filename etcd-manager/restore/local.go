package restore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/kopsnode/agents/etcd-manager/identity"
)

// LocalFileName is the member's restore record inside its data directory.
const LocalFileName = "restore.json"

// AsidePrefix starts the names of old etcd data directories a restore
// moved aside: <data-dir>/etcd-aside-<UTC time>. They are never deleted
// before the restored cluster is open and healthy; after that the newest
// KeepAside are kept.
const AsidePrefix = "etcd-aside-"

// KeepAside is how many moved-aside data directories a member keeps once
// a restore finished.
const KeepAside = 2

// Local is what a member remembers of the last restore it took part in,
// so that a restarted manager (or a new leader) knows whether its etcd
// runs the restored data, is quarantined, or must be rolled back.
type Local struct {
	CommandID string `json:"commandID"`
	Step      Step   `json:"step"`
	Error     string `json:"error,omitempty"`
	// Backup is the full backup it restored; NewToken the restored
	// cluster's token.
	Backup   string `json:"backup"`
	NewToken string `json:"newToken"`
	// Old is the membership it had before (state.json), for a rollback;
	// AsideDir where its old etcd data went ("" when it had none).
	Old      identity.State `json:"old"`
	AsideDir string         `json:"asideDir,omitempty"`
	Updated  time.Time      `json:"updated"`
}

// Quarantined reports whether the member's etcd must serve clients only
// on the quarantine URL.
func (l Local) Quarantined() bool { return l.Step == StepQuarantined }

// Blocked reports whether the member's etcd must not be started by
// anything but the restore itself: its data directory is half done, or
// the restore failed and waits for a rollback.
func (l Local) Blocked() bool { return l.Step == StepRestoring || l.Step == StepFailed }

// LoadLocal reads <dataDir>/restore.json; ok is false when there is none.
func LoadLocal(dataDir string) (l Local, ok bool, err error) {
	p := filepath.Join(dataDir, LocalFileName)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return Local{}, false, nil
	}
	if err != nil {
		return Local{}, false, fmt.Errorf("reading %s: %w", p, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return Local{}, false, fmt.Errorf("%s: %w (fix or move the file aside)", p, err)
	}
	return l, true, nil
}

// SaveLocal writes <dataDir>/restore.json atomically.
func SaveLocal(dataDir string, l Local) error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	return identity.WriteFileAtomic(filepath.Join(dataDir, LocalFileName), append(b, '\n'), 0o600)
}

// AsideDirName is where a restore at t moves the old etcd data.
func AsideDirName(dataDir string, t time.Time) string {
	return filepath.Join(dataDir, AsidePrefix+t.UTC().Format("20060102T150405.000000000Z"))
}

// AsideDirs lists the moved-aside data directories, oldest first (the
// names sort by time).
func AsideDirs(dataDir string) ([]string, error) {
	ents, err := os.ReadDir(dataDir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), AsidePrefix) {
			out = append(out, filepath.Join(dataDir, e.Name()))
		}
	}
	sort.Strings(out)
	return out, nil
}

// PruneAside removes all but the newest keep moved-aside data
// directories and returns what it removed. Only a finished restore calls
// it: before, every one of them may be what a rollback needs.
func PruneAside(dataDir string, keep int) ([]string, error) {
	dirs, err := AsideDirs(dataDir)
	if err != nil {
		return nil, err
	}
	var removed []string
	for len(dirs) > keep {
		if err := os.RemoveAll(dirs[0]); err != nil {
			return removed, fmt.Errorf("removing old data directory %s: %w", dirs[0], err)
		}
		removed = append(removed, dirs[0])
		dirs = dirs[1:]
	}
	return removed, nil
}
