package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"time"

	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/fsroot"
)

// StatusPath is the status file inside the root.
const StatusPath = "/var/lib/nodeup/status.json"

// PhaseTiming is one phase of a run.
type PhaseTiming struct {
	Phase    engine.Phase  `json:"phase"`
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration"`
	Changed  int           `json:"changed"`
	Failed   int           `json:"failed"`
}

// Status is what the last run did; `nodeup status` prints it.
type Status struct {
	Version    string          `json:"version"`
	Started    time.Time       `json:"started"`
	Finished   time.Time       `json:"finished"`
	Store      string          `json:"store"`
	Cluster    string          `json:"cluster"`
	Group      string          `json:"group"`
	ConfigHash string          `json:"configHash,omitempty"`
	Result     string          `json:"result"` // "converged" or "failed"
	Error      string          `json:"error,omitempty"`
	Phases     []PhaseTiming   `json:"phases,omitempty"`
	Tasks      []engine.Result `json:"tasks,omitempty"`
}

// SortTasks puts failed tasks first, then skipped, then warnings, then the
// rest, each by ID.
func (s *Status) SortTasks() {
	rank := func(st engine.Status) int {
		switch st {
		case engine.StatusFailed:
			return 0
		case engine.StatusSkipped:
			return 1
		case engine.StatusWarning:
			return 2
		}
		return 3
	}
	sort.SliceStable(s.Tasks, func(i, j int) bool {
		ri, rj := rank(s.Tasks[i].Status), rank(s.Tasks[j].Status)
		if ri != rj {
			return ri < rj
		}
		return s.Tasks[i].ID < s.Tasks[j].ID
	})
}

// WriteStatus writes the status file atomically.
func WriteStatus(f *fsroot.FS, s *Status) error {
	s.SortTasks()
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return f.WriteFile(StatusPath, append(b, '\n'), 0o644, fsroot.RootOwner)
}

// ReadStatus reads the status file.
func ReadStatus(f *fsroot.FS) (*Status, error) {
	b, err := f.ReadFile(StatusPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no status at %s: nodeup has not run on this root", StatusPath)
	}
	if err != nil {
		return nil, err
	}
	var s Status
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", StatusPath, err)
	}
	return &s, nil
}

// Human prints the status for an operator: failed tasks first, with errors.
func (s *Status) Human(w io.Writer) error {
	fmt.Fprintf(w, "nodeup %s: %s\n", s.Version, s.Result)
	fmt.Fprintf(w, "  config:   %s/%s (cluster %s, group %s)\n", s.Store, ConfigKey(s.Cluster, s.Group), s.Cluster, s.Group)
	if s.ConfigHash != "" {
		fmt.Fprintf(w, "  sha256:   %s\n", s.ConfigHash)
	}
	fmt.Fprintf(w, "  run:      %s -> %s (%s)\n", s.Started.Format(time.RFC3339), s.Finished.Format(time.RFC3339), s.Finished.Sub(s.Started).Round(time.Millisecond))
	if s.Error != "" {
		fmt.Fprintf(w, "  error:    %s\n", s.Error)
	}
	for _, p := range s.Phases {
		fmt.Fprintf(w, "  phase %-5s %8s  changed %d  failed %d\n", p.Phase, p.Duration.Round(time.Millisecond), p.Changed, p.Failed)
	}
	counts := map[engine.Status]int{}
	for _, t := range s.Tasks {
		counts[t.Status]++
	}
	fmt.Fprintf(w, "  tasks:    %d total, %d changed, %d unchanged, %d warning, %d failed, %d skipped\n",
		len(s.Tasks), counts[engine.StatusChanged], counts[engine.StatusUnchanged], counts[engine.StatusWarning], counts[engine.StatusFailed], counts[engine.StatusSkipped])
	for _, t := range s.Tasks {
		switch t.Status {
		case engine.StatusFailed, engine.StatusSkipped, engine.StatusWarning:
			fmt.Fprintf(w, "  %-8s %s: %s\n", t.Status, t.ID, t.Error)
		}
	}
	for _, t := range s.Tasks {
		switch t.Status {
		case engine.StatusChanged, engine.StatusUnchanged:
			fmt.Fprintf(w, "  %-8s %s (%s)\n", t.Status, t.ID, t.Duration.Round(time.Microsecond))
		}
	}
	return nil
}
