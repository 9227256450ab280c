package engine_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/fsroot"
	"github.com/kopsnode/agents/nodeup/state"
)

type fakeDiff string

func (d fakeDiff) Render(w io.Writer) { io.WriteString(w, string(d)+"\n") }

type fake struct {
	id      string
	deps    []string
	phase   engine.Phase
	diff    bool
	find    func(ctx context.Context) error
	apply   func(ctx context.Context) error
	applied atomic.Int32
}

func (f *fake) ID() string     { return f.id }
func (f *fake) Deps() []string { return f.deps }
func (f *fake) Phase() engine.Phase {
	if f.phase == "" {
		return engine.PhaseBoot
	}
	return f.phase
}
func (f *fake) Find(ctx context.Context, env *engine.Env) (engine.Diff, error) {
	if f.find != nil {
		if err := f.find(ctx); err != nil {
			return nil, err
		}
	}
	if !f.diff || f.applied.Load() > 0 {
		return nil, nil
	}
	return fakeDiff("change " + f.id), nil
}
func (f *fake) Apply(ctx context.Context, env *engine.Env, d engine.Diff) error {
	if f.apply != nil {
		if err := f.apply(ctx); err != nil {
			return err
		}
	}
	f.applied.Add(1)
	return nil
}

func testEnv(t *testing.T) *engine.Env {
	f, err := fsroot.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st, err := state.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	return &engine.Env{FS: f, State: st}
}

func graph(t *testing.T, tasks ...engine.Task) *engine.Graph {
	g := engine.NewGraph()
	for _, tk := range tasks {
		if err := g.Add("test", tk); err != nil {
			t.Fatal(err)
		}
	}
	return g
}

func fastOpts() engine.Options {
	return engine.Options{Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, TaskTimeout: 2 * time.Second}
}

func TestDuplicateTaskNamesBothOwners(t *testing.T) {
	g := engine.NewGraph()
	if err := g.Add("kubelet builder", &fake{id: "file:/etc/x"}); err != nil {
		t.Fatal(err)
	}
	err := g.Add("containerd builder", &fake{id: "file:/etc/x"})
	if err == nil || !strings.Contains(err.Error(), "kubelet builder") || !strings.Contains(err.Error(), "containerd builder") || !strings.Contains(err.Error(), "file:/etc/x") {
		t.Fatalf("err = %v, want both owners and the ID", err)
	}
}

func TestMissingDependencyAndCycleAreErrors(t *testing.T) {
	g := graph(t, &fake{id: "a", deps: []string{"nope"}})
	if err := g.Validate(); err == nil || !strings.Contains(err.Error(), "missing task nope") {
		t.Fatalf("missing dep: err = %v", err)
	}
	g = graph(t, &fake{id: "a", deps: []string{"b"}}, &fake{id: "b", deps: []string{"c"}}, &fake{id: "c", deps: []string{"a"}}, &fake{id: "d"})
	_, err := engine.Run(context.Background(), g, testEnv(t), fastOpts())
	if err == nil || !strings.Contains(err.Error(), "a -> b -> c -> a") {
		t.Fatalf("cycle: err = %v, want the cycle named", err)
	}
}

func TestIndependentTasksRunInParallel(t *testing.T) {
	var started sync.WaitGroup
	started.Add(3)
	all := make(chan struct{})
	go func() { started.Wait(); close(all) }()
	mk := func(id string) *fake {
		return &fake{id: id, diff: true, apply: func(ctx context.Context) error {
			started.Done()
			select {
			case <-all:
				return nil
			case <-time.After(5 * time.Second):
				return &engine.Permanent{Err: errors.New("tasks did not run concurrently")}
			}
		}}
	}
	g := graph(t, mk("a"), mk("b"), mk("c"))
	rep, err := engine.Run(context.Background(), g, testEnv(t), fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestDependenciesRunFirst(t *testing.T) {
	var mu sync.Mutex
	var order []string
	mk := func(id string, deps ...string) *fake {
		return &fake{id: id, deps: deps, diff: true, apply: func(context.Context) error {
			mu.Lock()
			order = append(order, id)
			mu.Unlock()
			return nil
		}}
	}
	g := graph(t, mk("c", "b"), mk("b", "a"), mk("a"))
	if _, err := engine.Run(context.Background(), g, testEnv(t), fastOpts()); err != nil {
		t.Fatal(err)
	}
	if strings.Join(order, ",") != "a,b,c" {
		t.Fatalf("order = %v", order)
	}
}

func TestFailedTaskRetriedThenDependentsSkipped(t *testing.T) {
	var calls atomic.Int32
	flaky := &fake{id: "flaky", diff: true, apply: func(context.Context) error {
		if calls.Add(1) < 3 {
			return errors.New("transient")
		}
		return nil
	}}
	broken := &fake{id: "broken", diff: true, apply: func(context.Context) error { return errors.New("disk full") }}
	child := &fake{id: "child", deps: []string{"broken"}, diff: true}
	grandchild := &fake{id: "grandchild", deps: []string{"child", "flaky"}, diff: true}
	g := graph(t, flaky, broken, child, grandchild)
	opts := fastOpts()
	opts.TaskTimeout = 200 * time.Millisecond
	rep, err := engine.Run(context.Background(), g, testEnv(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.Results["flaky"]; r.Status != engine.StatusChanged || r.Attempts != 3 {
		t.Fatalf("flaky = %+v, want changed after 3 attempts", r)
	}
	if r := rep.Results["broken"]; r.Status != engine.StatusFailed || !strings.Contains(r.Error, "disk full") || r.Attempts < 2 {
		t.Fatalf("broken = %+v, want failed after retries", r)
	}
	if r := rep.Results["child"]; r.Status != engine.StatusSkipped || !strings.Contains(r.Error, "broken failed") {
		t.Fatalf("child = %+v", r)
	}
	if r := rep.Results["grandchild"]; r.Status != engine.StatusSkipped || !strings.Contains(r.Error, "child was skipped") {
		t.Fatalf("grandchild = %+v", r)
	}
	if child.applied.Load() != 0 || grandchild.applied.Load() != 0 {
		t.Fatal("skipped tasks were applied")
	}
	failed := rep.Failed()
	if len(failed) != 3 || failed[0].ID != "broken" {
		t.Fatalf("Failed() = %+v, want broken first", failed)
	}
	if rep.Err() == nil {
		t.Fatal("Err() = nil")
	}
}

func TestPermanentErrorIsNotRetried(t *testing.T) {
	tk := &fake{id: "p", diff: true, apply: func(context.Context) error { return &engine.Permanent{Err: errors.New("bad hash")} }}
	rep, err := engine.Run(context.Background(), graph(t, tk), testEnv(t), fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.Results["p"]; r.Status != engine.StatusFailed || r.Attempts != 1 {
		t.Fatalf("p = %+v", r)
	}
}

func TestDryRunNeverApplies(t *testing.T) {
	a := &fake{id: "a", diff: true}
	b := &fake{id: "b", deps: []string{"a"}, diff: true}
	c := &fake{id: "c", deps: []string{"a"}}
	opts := fastOpts()
	opts.DryRun = true
	rep, err := engine.Run(context.Background(), graph(t, a, b, c), testEnv(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	if a.applied.Load()+b.applied.Load() != 0 {
		t.Fatal("dry run applied a task")
	}
	var plan strings.Builder
	rep.WritePlan(&plan)
	want := "~ a\n    change a\n~ b\n    change b\n"
	if plan.String() != want {
		t.Fatalf("plan = %q, want %q", plan.String(), want)
	}
	if got := fmt.Sprint(rep.Changed()); got != "[a b]" {
		t.Fatalf("changed = %s", got)
	}
}

func TestPhasesAndPriorResults(t *testing.T) {
	bake := &fake{id: "asset", phase: engine.PhaseBake, diff: true, apply: func(context.Context) error { return &engine.Permanent{Err: errors.New("dead mirror")} }}
	boot := &fake{id: "install", deps: []string{"asset"}, diff: true}
	other := &fake{id: "config", diff: true}
	g := graph(t, bake, boot, other)
	opts := fastOpts()
	opts.Phases = []engine.Phase{engine.PhaseBake}
	r1, err := engine.Run(context.Background(), g, testEnv(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(r1.Results) != 1 {
		t.Fatalf("bake ran %v", r1.Order)
	}
	opts.Phases = []engine.Phase{engine.PhaseBoot}
	opts.Prior = r1
	r2, err := engine.Run(context.Background(), g, testEnv(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Results["install"].Status != engine.StatusSkipped || r2.Results["config"].Status != engine.StatusChanged {
		t.Fatalf("boot = %+v", r2.Results)
	}
	// Without a prior result, a dependency in another phase counts as done.
	opts.Prior = nil
	boot.applied.Store(0)
	r3, err := engine.Run(context.Background(), g, testEnv(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	if r3.Results["install"].Status != engine.StatusChanged {
		t.Fatalf("install = %+v", r3.Results["install"])
	}
}

func TestPanicInTaskIsAFailure(t *testing.T) {
	tk := &fake{id: "boom", find: func(context.Context) error { panic("oops") }}
	rep, err := engine.Run(context.Background(), graph(t, tk), testEnv(t), fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.Results["boom"]; r.Status != engine.StatusFailed || !strings.Contains(r.Error, "oops") {
		t.Fatalf("boom = %+v", r)
	}
}

// TestDeadlineKeepsTheRealCause: when the task deadline cuts an attempt
// short, the reported error is the previous attempt's cause, not the
// deadline.
func TestDeadlineKeepsTheRealCause(t *testing.T) {
	var calls atomic.Int32
	slow := &fake{id: "slow", diff: true, apply: func(ctx context.Context) error {
		if calls.Add(1) == 1 {
			return errors.New("writing /var/cache/x: no space left on device")
		}
		<-ctx.Done() // the second attempt runs into the deadline
		return fmt.Errorf("writing /var/cache/x: %w", ctx.Err())
	}}
	opts := fastOpts()
	opts.TaskTimeout = 100 * time.Millisecond
	rep, err := engine.Run(context.Background(), graph(t, slow), testEnv(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Results["slow"]
	if r.Status != engine.StatusFailed || !strings.Contains(r.Error, "no space left on device") || !strings.Contains(r.Error, "gave up after") {
		t.Fatalf("slow = %+v, want the full-disk cause and the give-up note", r)
	}
}
