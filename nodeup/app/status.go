package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/fsroot"
	"github.com/kopsnode/agents/nodeup/model"
	"github.com/kopsnode/agents/nodeup/nodecheck"
	"github.com/kopsnode/agents/pkg/bootstraptoken"
	"github.com/kopsnode/agents/pkg/store"
	units "github.com/kopsnode/agents/systemd-units"
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

// StatusReport is what `nodeup status` prints: the last run's status and,
// under "checks", why the node has or has not joined the cluster.
type StatusReport struct {
	*Status
	Checks *nodecheck.Report `json:"checks,omitempty"`
}

// Human prints the run's status, then the node checks.
func (r *StatusReport) Human(w io.Writer) error {
	if err := r.Status.Human(w); err != nil {
		return err
	}
	if r.Checks != nil {
		humanChecks(w, r.Checks, time.Now())
	}
	return nil
}

// unitsUnavailable answers every unit read with why units are not read.
type unitsUnavailable struct{ why string }

func (u unitsUnavailable) UnitState(context.Context, string) (nodecheck.UnitState, error) {
	return nodecheck.UnitState{}, errors.New(u.why)
}

// NodeChecks runs the node checks for a node converged under f with the
// given last-run status: units over D-Bus (only on a live root with
// systemd running), the API server and the kubelet's credentials from the
// kubeconfig paths of the node model.
func NodeChecks(ctx context.Context, f *fsroot.FS, st *Status, timeout time.Duration) nodecheck.Report {
	in := nodecheck.Inputs{
		Files:     f,
		Resolver:  net.DefaultResolver,
		UnitNames: []string{units.Containerd().Name, units.Kubelet(model.KubeletEnv).Name},
		Paths: nodecheck.Paths{
			KubeletKubeconfig:   model.KubeletKubeconfig,
			BootstrapKubeconfig: model.KubeletBootstrapKubeconfig,
			CAFile:              model.KubeletClientCA,
		},
		NodeName: hostname(f),
		Timeout:  timeout,
	}
	if st.Store != "" && st.Cluster != "" {
		in.TokenSource = store.JoinURL(st.Store, bootstraptoken.Key(st.Cluster))
	}
	switch {
	case !f.IsLive():
		in.Units = unitsUnavailable{"not read: --root is not this machine's root"}
	case !units.Booted():
		in.Units = unitsUnavailable{"not read: systemd is not running on this machine (no /run/systemd/system)"}
	default:
		d := units.NewDBus()
		defer d.Close()
		in.Units = d
	}
	return nodecheck.Run(ctx, in)
}

// humanChecks prints the node checks for an operator.
func humanChecks(w io.Writer, r *nodecheck.Report, now time.Time) {
	fmt.Fprintf(w, "node:\n")
	for _, u := range r.Units {
		switch {
		case u.Unknown != "":
			fmt.Fprintf(w, "  %-12s unknown: %s\n", unitShort(u.Name), u.Unknown)
		case u.LoadState == "not-found":
			fmt.Fprintf(w, "  %-12s not installed\n", unitShort(u.Name))
		default:
			line := fmt.Sprintf("  %-12s %s (%s)", unitShort(u.Name), u.ActiveState, u.SubState)
			if u.Result != "" && u.Result != "success" {
				line += ", last result " + u.Result
			}
			if !u.Since.IsZero() {
				line += " since " + u.Since.Format(time.RFC3339) + " (" + ago(now, u.Since) + ")"
			}
			fmt.Fprintln(w, line)
		}
	}

	a := r.API
	switch {
	case a.Unknown != "":
		fmt.Fprintf(w, "  api          unknown: %s\n", a.Unknown)
	default:
		fmt.Fprintf(w, "  api          %s (from %s)\n", a.Server, a.From)
		switch {
		case a.Resolves && len(a.Addresses) == 1 && a.Addresses[0] == a.Host:
			fmt.Fprintf(w, "    address    %s (no name to resolve)\n", a.Host)
		case a.Resolves:
			fmt.Fprintf(w, "    resolves   %s -> %s\n", a.Host, strings.Join(a.Addresses, ", "))
		case a.Host != "":
			fmt.Fprintf(w, "    resolves   no: %s\n", a.Error)
		}
		switch {
		case a.Ready:
			fmt.Fprintf(w, "    answers    yes, /readyz %s\n", a.Readyz)
		case a.Answers:
			fmt.Fprintf(w, "    answers    yes, not ready: %s\n", a.Readyz)
		case a.Resolves || a.Host == "":
			fmt.Fprintf(w, "    answers    no: %s\n", a.Error)
		}
	}

	c := r.Certificate
	switch {
	case c.Issued:
		fmt.Fprintf(w, "  certificate  issued: %s, %s, expires %s\n", c.Path, c.Subject, c.NotAfter.Format(time.RFC3339))
		if c.Error != "" {
			fmt.Fprintf(w, "    error      %s\n", c.Error)
		}
	case c.Error != "":
		fmt.Fprintf(w, "  certificate  not issued: %s\n", c.Error)
	case c.Unknown != "":
		fmt.Fprintf(w, "  certificate  not issued; %s\n", c.Unknown)
	default:
		fmt.Fprintf(w, "  certificate  not issued yet\n")
	}
	if !c.Issued && c.BootstrapToken != nil && c.Error == "" {
		if len(c.CSRs) == 0 {
			fmt.Fprintf(w, "    csr        none from this node yet (bootstrap token %s)\n", c.BootstrapToken.ID)
		}
		for i, q := range c.CSRs {
			if i == 3 {
				fmt.Fprintf(w, "    csr        ... %d older\n", len(c.CSRs)-i)
				break
			}
			line := fmt.Sprintf("    csr        %s %s, created %s by %s", q.Name, q.State, q.Created.Format(time.RFC3339), q.Requestor)
			if q.Reason != "" || q.Message != "" {
				line += ": " + strings.TrimSpace(q.Reason+" "+q.Message)
			}
			fmt.Fprintln(w, line)
		}
	}

	n := r.Node
	switch {
	case n.Unknown != "":
		fmt.Fprintf(w, "  node Ready   unknown: %s\n", n.Unknown)
	case n.Error != "":
		fmt.Fprintf(w, "  node Ready   unknown: %s\n", n.Error)
	default:
		line := fmt.Sprintf("  node Ready   %s (Node %s", n.Ready, n.Name)
		if !n.LastTransition.IsZero() {
			line += ", since " + n.LastTransition.Format(time.RFC3339) + " (" + ago(now, n.LastTransition) + ")"
		}
		line += ")"
		if n.Reason != "" || n.Message != "" {
			line += ": " + strings.TrimSpace(n.Reason+" "+n.Message)
		}
		fmt.Fprintln(w, line)
	}
}

func unitShort(name string) string { return strings.TrimSuffix(name, ".service") }

func ago(now, t time.Time) string {
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
	return d.Round(time.Second).String() + " ago"
}
