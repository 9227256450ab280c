package app

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kopsnode/agents/nodeup/internal/nodeuptest"
	"github.com/kopsnode/agents/nodeup/tasks"
)

// benchFixture is newFixture for benchmarks.
func benchFixture(b *testing.B) *fixture {
	root := b.TempDir()
	f := &fixture{root: root, systemd: nodeuptest.NewSystemd(root), runner: &nodeuptest.Runner{}}
	f.assets = nodeuptest.StandardAssets(b, "v1")
	f.srv = nodeuptest.NewServer(b, f.assets)
	f.store, f.url = nodeuptest.Store(b)
	f.cfg = nodeuptest.NodeConfig("test.k8s.local", "g1", "control-plane", f.assets, f.srv.URL)
	nodeuptest.Put(b, f.store, ConfigKey("test.k8s.local", "g1"), f.cfg)
	return f
}

func mustApply(b *testing.B, o Options) *Status {
	st, err := Apply(context.Background(), o)
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// BenchmarkNoopRerun is a re-run over a converged root with the full
// control-plane model: store read, hash check, parse, model build, every
// task's Find. Target: under 150 ms.
func BenchmarkNoopRerun(b *testing.B) {
	f := benchFixture(b)
	mustApply(b, f.opts())
	f.systemd.Calls()
	b.ResetTimer()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		st := mustApply(b, f.opts())
		total += time.Since(start)
		for _, r := range st.Tasks {
			if r.Changed() {
				b.Fatalf("no-op run changed %s", r.ID)
			}
		}
	}
	if c := f.systemd.Calls(); len(c) != 0 {
		b.Fatalf("no-op run called systemd %v", c)
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/run")
	b.ReportMetric(float64(len(mustApply(b, f.opts()).Tasks)), "tasks")
}

// BenchmarkColdConvergeCachedAssets converges a fresh root whose asset
// cache is already filled (a baked image booting for the first time).
func BenchmarkColdConvergeCachedAssets(b *testing.B) {
	f := benchFixture(b)
	o := f.opts()
	o.Phase = "bake"
	mustApply(b, o)
	cache := filepath.Join(f.root, tasks.CacheDir)
	b.ResetTimer()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		root := b.TempDir()
		if err := os.MkdirAll(filepath.Join(root, "var/cache/nodeup"), 0o755); err != nil {
			b.Fatal(err)
		}
		if out, err := exec.Command("cp", "-a", cache, filepath.Join(root, "var/cache/nodeup/")).CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
		o := f.opts()
		o.Root = root
		o.Systemd = nodeuptest.NewSystemd(root)
		requests := f.srv.Requests.Load()
		b.StartTimer()
		start := time.Now()
		mustApply(b, o)
		total += time.Since(start)
		if f.srv.Requests.Load() != requests {
			b.Fatal("cold converge downloaded although the cache was full")
		}
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/run")
}

// gate is an asset server that holds each request until want requests are
// in flight at once (or a deadline passes), recording the maximum.
type gate struct {
	mu       sync.Mutex // guards inflight and max
	inflight int
	max      int
	want     int
	all      chan struct{}
}

func (g *gate) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		g.inflight++
		if g.inflight > g.max {
			g.max = g.inflight
		}
		if g.inflight == g.want {
			close(g.all)
		}
		g.mu.Unlock()
		select {
		case <-g.all:
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
		g.mu.Lock()
		g.inflight--
		g.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func parallelDownloads(t testing.TB, workers int) (int, time.Duration) {
	root := t.TempDir()
	assets := nodeuptest.StandardAssets(t, "v1")
	g := &gate{want: workers, all: make(chan struct{})}
	inner := nodeuptest.NewServer(t, assets)
	srv := httptest.NewServer(g.wrap(inner.Config.Handler))
	t.Cleanup(srv.Close)
	s, url := nodeuptest.Store(t)
	cfg := nodeuptest.NodeConfig("test.k8s.local", "g1", "control-plane", assets, srv.URL)
	nodeuptest.Put(t, s, ConfigKey("test.k8s.local", "g1"), cfg)
	f := &fixture{root: root, url: url, cfg: cfg, systemd: nodeuptest.NewSystemd(root), runner: &nodeuptest.Runner{}}
	o := f.opts()
	o.Phase = "bake"
	o.Engine.Workers = workers
	start := time.Now()
	if _, err := Apply(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	return g.max, time.Since(start)
}

func TestAssetsDownloadInParallel(t *testing.T) {
	if max, _ := parallelDownloads(t, 4); max < 4 {
		t.Fatalf("at most %d downloads in flight, want 4", max)
	}
}

// BenchmarkParallelAssetDownloads reports how many of the six assets were
// downloading at once with four workers.
func BenchmarkParallelAssetDownloads(b *testing.B) {
	var max int
	var total time.Duration
	for i := 0; i < b.N; i++ {
		m, d := parallelDownloads(b, 4)
		max, total = m, total+d
	}
	b.ReportMetric(float64(max), "max-in-flight")
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/run")
}
