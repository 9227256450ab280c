// Package engine runs nodeup's task graph: typed tasks with explicit
// dependencies, each of which finds the actual state, computes a typed diff
// against the wanted state and applies only that diff. Independent tasks run
// in parallel on a bounded worker pool; a failing task is retried with
// backoff until its deadline and its dependents are skipped. In a dry run
// Apply is never called: the plan is the rendered diffs.
package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/kopsnode/agents/nodeup/fsroot"
	"github.com/kopsnode/agents/nodeup/state"
	units "github.com/kopsnode/agents/systemd-units"
)

// Phase groups tasks: bake (packages, assets into the cache) runs when an
// image is built; boot (configuration, units, services) on every boot.
type Phase string

const (
	PhaseBake Phase = "bake"
	PhaseBoot Phase = "boot"
)

// Diff is a task's typed difference between wanted and actual state. A task
// returns a nil Diff when it is converged. Render writes the plan lines a
// dry run prints (without a trailing header; the engine adds the task ID).
type Diff interface {
	Render(w io.Writer)
}

// Task is one node of the graph.
type Task interface {
	// ID is unique in the graph: "file:/etc/containerd/config.toml",
	// "unit:kubelet.service", "asset:kubelet".
	ID() string
	// Deps are the IDs of tasks that must succeed before this one runs.
	Deps() []string
	Phase() Phase
	// Find reads the actual state and returns the diff to apply, nil when
	// converged. It must not change anything.
	Find(ctx context.Context, env *Env) (Diff, error)
	// Apply applies a diff that Find returned.
	Apply(ctx context.Context, env *Env, d Diff) error
}

// Timeouter is implemented by tasks that need a deadline other than the
// engine's default (large downloads).
type Timeouter interface{ Timeout() time.Duration }

// Runner runs commands; the seam through which tests record package manager
// and modprobe calls.
type Runner interface {
	Run(ctx context.Context, name string, args ...string) ([]byte, error)
}

// Env is what tasks act through. The engine gives each task its own copy
// with Changed set.
type Env struct {
	FS      *fsroot.FS
	Exec    Runner
	Systemd units.Manager
	State   *state.State
	HTTP    *http.Client
	Log     *slog.Logger
	DryRun  bool
	// AttemptTimeout bounds one download attempt from one mirror.
	AttemptTimeout time.Duration
	// OpenObject reads an asset from a bucket URL (s3://bucket/key,
	// gs://bucket/key); nil when the run has no store access.
	OpenObject func(ctx context.Context, url string) (io.ReadCloser, error)
	// Changed reports whether the task with the given ID changed in this
	// run (in a dry run: would change). Only meaningful for the task's deps.
	Changed func(id string) bool
}

// Live reports whether tasks act on the running machine (root is "/"), so
// that modprobe, sysctl writes and service starts make sense.
func (e *Env) Live() bool { return e.FS.IsLive() }

// Warning marks an Apply error that does not fail the task: the durable part
// was done (a modules-load.d file written) and the immediate part could not
// be (modprobe in a container). It is not retried.
type Warning struct{ Err error }

func (w *Warning) Error() string { return w.Err.Error() }
func (w *Warning) Unwrap() error { return w.Err }

// Permanent marks an error that retrying cannot fix (a hash mismatch on
// every mirror, an invalid input).
type Permanent struct{ Err error }

func (p *Permanent) Error() string { return p.Err.Error() }
func (p *Permanent) Unwrap() error { return p.Err }

// Graph is a set of tasks keyed by ID, each added by a named owner.
type Graph struct {
	tasks map[string]entry
}

type entry struct {
	task  Task
	owner string
}

// NewGraph returns an empty graph.
func NewGraph() *Graph { return &Graph{tasks: map[string]entry{}} }

// Add adds a task; a second task with the same ID is an error naming both owners.
func (g *Graph) Add(owner string, t Task) error {
	if prev, ok := g.tasks[t.ID()]; ok {
		return fmt.Errorf("duplicate task %s: added by %s and by %s", t.ID(), prev.owner, owner)
	}
	g.tasks[t.ID()] = entry{task: t, owner: owner}
	return nil
}

// Get returns a task by ID.
func (g *Graph) Get(id string) (Task, bool) {
	e, ok := g.tasks[id]
	return e.task, ok
}

// Owner returns who added a task.
func (g *Graph) Owner(id string) string { return g.tasks[id].owner }

// IDs returns every task ID, sorted.
func (g *Graph) IDs() []string {
	ids := make([]string, 0, len(g.tasks))
	for id := range g.tasks {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Len is the number of tasks.
func (g *Graph) Len() int { return len(g.tasks) }

// Validate reports missing dependencies and cycles, naming them.
func (g *Graph) Validate() error {
	var errs []error
	for _, id := range g.IDs() {
		for _, d := range g.tasks[id].task.Deps() {
			if _, ok := g.tasks[d]; !ok {
				errs = append(errs, fmt.Errorf("task %s (added by %s) depends on missing task %s", id, g.tasks[id].owner, d))
			}
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	var visit func(id string) error
	visit = func(id string) error {
		color[id] = grey
		stack = append(stack, id)
		deps := append([]string(nil), g.tasks[id].task.Deps()...)
		sort.Strings(deps)
		for _, d := range deps {
			switch color[d] {
			case grey:
				i := len(stack) - 1
				for stack[i] != d {
					i--
				}
				cycle := append(append([]string(nil), stack[i:]...), d)
				return fmt.Errorf("dependency cycle: %s", strings.Join(cycle, " -> "))
			case white:
				if err := visit(d); err != nil {
					return err
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[id] = black
		return nil
	}
	for _, id := range g.IDs() {
		if color[id] == white {
			if err := visit(id); err != nil {
				return err
			}
		}
	}
	return nil
}

// Status is a task's outcome in one run.
type Status string

const (
	StatusUnchanged Status = "unchanged"
	StatusChanged   Status = "changed"
	StatusPlanned   Status = "planned" // dry run: would change
	StatusWarning   Status = "warning" // changed, with a warning
	StatusFailed    Status = "failed"
	StatusSkipped   Status = "skipped"
)

// Result is one task's outcome.
type Result struct {
	ID       string        `json:"id"`
	Phase    Phase         `json:"phase"`
	Status   Status        `json:"status"`
	Error    string        `json:"error,omitempty"`
	Attempts int           `json:"attempts,omitempty"`
	Duration time.Duration `json:"duration"`
	// Plan is the rendered diff (what changed, or would change).
	Plan string `json:"plan,omitempty"`
	// Finished is when the task's outcome was decided.
	Finished time.Time `json:"finished"`
}

// Changed reports whether the task changed (or would, in a dry run).
func (r Result) Changed() bool {
	return r.Status == StatusChanged || r.Status == StatusPlanned || r.Status == StatusWarning
}

// Report is the outcome of a run.
type Report struct {
	Results map[string]Result
	// Order is the order in which tasks finished.
	Order []string
}

// Failed returns the failed and skipped results, failed first.
func (r *Report) Failed() []Result {
	var out []Result
	for _, id := range r.Order {
		if r.Results[id].Status == StatusFailed {
			out = append(out, r.Results[id])
		}
	}
	for _, id := range r.Order {
		if r.Results[id].Status == StatusSkipped {
			out = append(out, r.Results[id])
		}
	}
	return out
}

// Err summarises failures as an error, nil when every task succeeded.
func (r *Report) Err() error {
	var errs []error
	for _, res := range r.Failed() {
		errs = append(errs, fmt.Errorf("%s %s: %s", res.ID, res.Status, res.Error))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%d task(s) did not converge: %w", len(errs), errors.Join(errs...))
}

// Changed returns the IDs of tasks that changed (or would), sorted.
func (r *Report) Changed() []string {
	var out []string
	for id, res := range r.Results {
		if res.Changed() {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// WritePlan writes the plan: one block per task that changes, in ID order.
func (r *Report) WritePlan(w io.Writer) {
	ids := make([]string, 0, len(r.Results))
	for id := range r.Results {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	n := 0
	for _, id := range ids {
		res := r.Results[id]
		switch {
		case res.Changed():
			n++
			fmt.Fprintf(w, "~ %s\n", id)
			for _, line := range strings.Split(strings.TrimRight(res.Plan, "\n"), "\n") {
				if line != "" {
					fmt.Fprintf(w, "    %s\n", line)
				}
			}
		case res.Status == StatusFailed:
			fmt.Fprintf(w, "! %s: %s\n", id, res.Error)
		case res.Status == StatusSkipped:
			fmt.Fprintf(w, "- %s: skipped: %s\n", id, res.Error)
		}
	}
	if n == 0 {
		fmt.Fprintln(w, "no changes")
	}
}

// Options configure a run.
type Options struct {
	// Workers bounds parallelism (default 4).
	Workers int
	DryRun  bool
	// Phases selects tasks by phase; empty means every phase. A dependency
	// on a task of an unselected phase counts as satisfied, unless Prior
	// says it failed.
	Phases []Phase
	// Prior holds the results of an earlier run in the same invocation (the
	// bake phase before the boot phase).
	Prior *Report
	// TaskTimeout is each task's deadline for all its attempts (default 5m).
	TaskTimeout time.Duration
	// Backoff is the first retry delay, doubled up to MaxBackoff.
	Backoff    time.Duration
	MaxBackoff time.Duration
	Log        *slog.Logger
	Now        func() time.Time
}

func (o *Options) defaults() {
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.TaskTimeout <= 0 {
		o.TaskTimeout = 5 * time.Minute
	}
	if o.Backoff <= 0 {
		o.Backoff = 500 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 15 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

type done struct {
	id  string
	res Result
}

// Run runs the selected tasks of g. It validates the graph first and returns
// an error only for an invalid graph or a cancelled context; task failures
// are in the report (see Report.Err).
func Run(ctx context.Context, g *Graph, env *Env, opts Options) (*Report, error) {
	opts.defaults()
	if err := g.Validate(); err != nil {
		return nil, err
	}
	selected := map[string]bool{}
	for _, id := range g.IDs() {
		t := g.tasks[id].task
		if len(opts.Phases) == 0 || containsPhase(opts.Phases, t.Phase()) {
			selected[id] = true
		}
	}
	rep := &Report{Results: map[string]Result{}}
	pending := map[string]int{}         // unfinished selected deps
	dependents := map[string][]string{} // dep -> selected dependents
	for id := range selected {
		for _, d := range g.tasks[id].task.Deps() {
			if selected[d] {
				pending[id]++
				dependents[d] = append(dependents[d], id)
			}
		}
	}
	// results is read by workers through Changed; it is only written by
	// this goroutine, and a task only reads its finished deps, which were
	// written before the task was handed out (channel send orders them).
	results := map[string]Result{}
	if opts.Prior != nil {
		for id, r := range opts.Prior.Results {
			results[id] = r
		}
	}
	snapshot := func() map[string]Result {
		m := make(map[string]Result, len(results))
		for k, v := range results {
			m[k] = v
		}
		return m
	}

	jobs := make(chan job)
	finished := make(chan done)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	workers := opts.Workers
	if workers > len(selected) && len(selected) > 0 {
		workers = len(selected)
	}
	exited := make(chan struct{})
	for i := 0; i < workers; i++ {
		go func() {
			defer func() { exited <- struct{}{} }()
			for j := range jobs {
				finished <- done{id: j.task.ID(), res: runTask(runCtx, j, env, opts)}
			}
		}()
	}

	var ready []string
	for id := range selected {
		if pending[id] == 0 {
			ready = append(ready, id)
		}
	}
	sort.Strings(ready)
	inflight := 0
	remaining := len(selected)
	record := func(id string, res Result) {
		results[id] = res
		rep.Results[id] = res
		rep.Order = append(rep.Order, id)
		remaining--
		for _, dep := range dependents[id] {
			pending[dep]--
			if pending[dep] == 0 {
				ready = append(ready, dep)
			}
		}
		sort.Strings(ready)
	}
	for remaining > 0 {
		// Decide skips without a worker.
		for len(ready) > 0 {
			id := ready[0]
			if reason := blocked(g.tasks[id].task, results); reason != "" {
				ready = ready[1:]
				opts.Log.Warn("skipping task", "task", id, "reason", reason)
				record(id, Result{ID: id, Phase: g.tasks[id].task.Phase(), Status: StatusSkipped, Error: reason, Finished: opts.Now()})
				continue
			}
			break
		}
		var send chan job
		var next job
		if len(ready) > 0 {
			send = jobs
			next = job{task: g.tasks[ready[0]].task, results: snapshot()}
		}
		if send == nil && inflight == 0 {
			break
		}
		select {
		case send <- next:
			ready = ready[1:]
			inflight++
		case d := <-finished:
			inflight--
			record(d.id, d.res)
		}
	}
	close(jobs)
	for i := 0; i < workers; i++ {
		<-exited
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	return rep, nil
}

type job struct {
	task    Task
	results map[string]Result
}

func containsPhase(ps []Phase, p Phase) bool {
	for _, x := range ps {
		if x == p {
			return true
		}
	}
	return false
}

func blocked(t Task, results map[string]Result) string {
	deps := append([]string(nil), t.Deps()...)
	sort.Strings(deps)
	for _, d := range deps {
		r, ok := results[d]
		if !ok {
			continue
		}
		switch r.Status {
		case StatusFailed:
			return fmt.Sprintf("dependency %s failed", d)
		case StatusSkipped:
			return fmt.Sprintf("dependency %s was skipped", d)
		}
	}
	return ""
}

func runTask(ctx context.Context, j job, env *Env, opts Options) (res Result) {
	t := j.task
	start := opts.Now()
	res = Result{ID: t.ID(), Phase: t.Phase()}
	defer func() {
		if p := recover(); p != nil {
			res.Status = StatusFailed
			res.Error = fmt.Sprintf("panic: %v", p)
		}
		res.Duration = opts.Now().Sub(start)
		res.Finished = opts.Now()
	}()
	timeout := opts.TaskTimeout
	if to, ok := t.(Timeouter); ok && to.Timeout() > 0 {
		timeout = to.Timeout()
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	e := *env
	e.DryRun = opts.DryRun
	e.Changed = func(id string) bool { return j.results[id].Changed() }
	if e.Log == nil {
		e.Log = opts.Log
	}
	e.Log = e.Log.With("task", t.ID())
	delay := opts.Backoff
	var lastErr error
	for {
		res.Attempts++
		status, plan, err := attempt(tctx, t, &e)
		if err == nil {
			res.Status, res.Plan = status, plan
			return res
		}
		var w *Warning
		if errors.As(err, &w) {
			res.Status, res.Plan, res.Error = StatusWarning, plan, err.Error()
			e.Log.Warn("task converged with a warning", "error", err)
			return res
		}
		// When the task's deadline cut an attempt short, the error worth
		// reporting is the previous attempt's (a full disk, a hash
		// mismatch), not "context deadline exceeded".
		if lastErr == nil || tctx.Err() == nil || !errors.Is(err, context.DeadlineExceeded) {
			lastErr = err
		}
		var perm *Permanent
		if errors.As(err, &perm) || tctx.Err() != nil {
			break
		}
		e.Log.Warn("task failed, retrying", "attempt", res.Attempts, "error", err, "backoff", delay)
		timer := time.NewTimer(delay)
		select {
		case <-tctx.Done():
			timer.Stop()
		case <-timer.C:
		}
		if tctx.Err() != nil {
			break
		}
		delay *= 2
		if delay > opts.MaxBackoff {
			delay = opts.MaxBackoff
		}
	}
	res.Status = StatusFailed
	res.Error = lastErr.Error()
	if tctx.Err() != nil && ctx.Err() == nil {
		res.Error = fmt.Sprintf("%s (gave up after %d attempts in %s)", lastErr, res.Attempts, timeout)
	}
	e.Log.Error("task failed", "error", res.Error)
	return res
}

func attempt(ctx context.Context, t Task, env *Env) (Status, string, error) {
	d, err := t.Find(ctx, env)
	if err != nil {
		return "", "", fmt.Errorf("finding state: %w", err)
	}
	if d == nil {
		return StatusUnchanged, "", nil
	}
	var b strings.Builder
	d.Render(&b)
	if env.DryRun {
		return StatusPlanned, b.String(), nil
	}
	if err := t.Apply(ctx, env, d); err != nil {
		return "", b.String(), err
	}
	return StatusChanged, b.String(), nil
}
