package membership

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/kopsnode/agents/gossip/hlc"
	"github.com/kopsnode/agents/gossip/records"
	"github.com/kopsnode/agents/gossip/seeds"
)

// simCluster is n in-process members on 127.0.0.1, each with its own UDP
// and TCP port, encrypted with one key, using LAN timings except where the
// test says otherwise.
type simCluster struct {
	members []member
}

func startSim(tb testing.TB, n int, tune func(*Config)) *simCluster {
	tb.Helper()
	ks := KeySet{Primary: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}
	keys := staticKeys(ks)
	c := &simCluster{}
	tb.Cleanup(func() {
		// Shut down without leave messages: 500 leaves would only create
		// work for members that are about to stop too.
		for _, m := range c.members {
			m.node.Kill()
			m.table.Close()
		}
	})
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("m%03d", i)
		rc := records.DefaultConfig(name)
		rc.Clock = hlc.New(nil, time.Minute)
		tbl, err := records.New(rc)
		if err != nil {
			tb.Fatal(err)
		}
		cfg := DefaultConfig(name)
		cfg.BindAddr = "127.0.0.1"
		cfg.BindPort = 0
		cfg.Keys = keys
		cfg.RejoinInterval = time.Hour // joins are done below
		cfg.KeyPollInterval = time.Hour
		cfg.Delegate = tbl.Delegate()
		cfg.Events = tbl.Events()
		cfg.Logger = testLogger().With("node", name)
		// A member that joins before an earlier join's broadcast reached
		// its seed learns of that member only at the next push/pull; LAN's
		// 30 s (scaled up with size) would dominate the time to form.
		cfg.PushPullInterval = 5 * time.Second
		if tune != nil {
			tune(&cfg)
		}
		// Each member joins through up to three earlier ones.
		var s seeds.Static
		for j := 0; j < 3 && j < i; j++ {
			s = append(s, c.members[(i-1-j)*7%i].node.Addr())
		}
		cfg.Seeds = s
		nd, err := Start(context.Background(), cfg)
		if err != nil {
			tbl.Close()
			tb.Fatalf("starting %s: %v", name, err)
		}
		c.members = append(c.members, member{node: nd, table: tbl})
		if (i+1)%100 == 0 {
			tb.Logf("%d members started", i+1)
		}
	}
	return c
}

// staticKeys is a KeySource that never changes, for simulations.
type staticKeys KeySet

func (s staticKeys) Load(context.Context) (KeySet, string, error) { return KeySet(s), "1", nil }
func (s staticKeys) Version(context.Context) (string, error)      { return "1", nil }
func (s staticKeys) String() string                               { return "static keys" }

func (c *simCluster) waitMembership(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	n := len(c.members)
	deadline := time.Now().Add(timeout)
	lastLog := time.Now()
	for {
		short := 0
		var example string
		for _, m := range c.members {
			if a := m.node.NumAlive(); a != n {
				short++
				seen := map[string]bool{}
				for _, mm := range m.node.Members() {
					if mm.State == "alive" {
						seen[mm.Name] = true
					}
				}
				var missing []string
				for _, o := range c.members {
					if !seen[o.table.NodeName()] {
						missing = append(missing, o.table.NodeName()+"@"+o.node.Addr())
					}
				}
				example = fmt.Sprintf("%s sees %d, missing %v", m.table.NodeName(), a, missing)
			}
		}
		if short == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after %s, %d of %d members do not see all %d (%s)", timeout, short, n, n, example)
		}
		if time.Since(lastLog) > 10*time.Second {
			lastLog = time.Now()
			tb.Logf("%d of %d members do not see all yet (%s)", short, n, example)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// propagate writes a record on one member and returns how long until every
// member holds it.
func (c *simCluster) propagate(tb testing.TB, key string, timeout time.Duration) time.Duration {
	tb.Helper()
	start := time.Now()
	src := c.members[0]
	if err := src.table.Put(key, []byte("v")); err != nil {
		tb.Fatal(err)
	}
	owner := src.table.NodeName()
	pending := append([]member(nil), c.members...)
	for len(pending) > 0 {
		rest := pending[:0]
		for _, m := range pending {
			if _, ok := m.table.Get(owner, key); !ok {
				rest = append(rest, m)
			}
		}
		pending = rest
		if len(pending) == 0 {
			break
		}
		if time.Since(start) > timeout {
			tb.Fatalf("after %s, %d of %d members lack %s", timeout, len(pending), len(c.members), key)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// TestFiftyMembersConverge is the correctness check of the simulation: 50
// encrypted members on loopback agree on membership and every record
// written on one reaches all.
func TestFiftyMembersConverge(t *testing.T) {
	c := startSim(t, 50, nil)
	c.waitMembership(t, 60*time.Second)
	for i := 0; i < 3; i++ {
		d := c.propagate(t, fmt.Sprintf("k%d", i), 30*time.Second)
		t.Logf("record %d reached 50 members in %s", i, d)
	}
}

// BenchmarkConvergence500 starts 500 encrypted members on loopback with LAN
// timings and reports the time for a record to reach every member and the
// memory each member costs.
func BenchmarkConvergence500(b *testing.B) {
	benchConvergence(b, 500)
}

func benchConvergence(b *testing.B, n int) {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	startT := time.Now()
	// Probing only finds failures, which this benchmark has none of; a
	// slower probe leaves the two CPUs to gossip.
	c := startSim(b, n, func(cfg *Config) {
		cfg.ProbeInterval = 5 * time.Second
		cfg.ProbeTimeout = 2 * time.Second
	})
	c.waitMembership(b, 5*time.Minute)
	b.ReportMetric(time.Since(startT).Seconds(), "s-to-form")
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/float64(n), "heap-bytes/member")
	b.ReportMetric(float64(runtime.NumGoroutine()-g0)/float64(n), "goroutines/member")
	// Forming the cluster dominates the run, so every invocation measures a
	// fixed number of records whatever b.N is; run with -benchtime 1x.
	const records = 5
	var total, worst time.Duration
	for i := 0; i < records; i++ {
		d := c.propagate(b, fmt.Sprintf("bench-%d-%d", b.N, i), time.Minute)
		total += d
		worst = max(worst, d)
	}
	b.ReportMetric(total.Seconds()/records, "s-to-converge")
	b.ReportMetric(worst.Seconds(), "s-to-converge-max")
}
