package podnet

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/kopsnode/agents/cni"
	"github.com/kopsnode/agents/gossip/hlc"
	"github.com/kopsnode/agents/gossip/records"
)

// fakeRoutes is a routing table in memory.
type fakeRoutes struct {
	mu     sync.Mutex
	routes map[netip.Prefix]netip.Addr
	fail   error
}

func (f *fakeRoutes) List(ctx context.Context) ([]Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Route
	for d, v := range f.routes {
		out = append(out, Route{Dst: d, Via: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Dst.String() < out[j].Dst.String() })
	return out, nil
}

func (f *fakeRoutes) Replace(ctx context.Context, r Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.routes[r.Dst] = r.Via
	return nil
}

func (f *fakeRoutes) Delete(ctx context.Context, r Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.routes, r.Dst)
	return nil
}

type fakeMasq struct {
	mu    sync.Mutex
	calls int
	args  [2]netip.Prefix
}

func (f *fakeMasq) Ensure(ctx context.Context, pod, nonMasq netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.args = [2]netip.Prefix{pod, nonMasq}
	return nil
}

func newTable(t *testing.T, name string) *records.Table {
	t.Helper()
	c := records.DefaultConfig(name)
	c.Clock = hlc.New(time.Now, time.Minute)
	c.LeaveGrace = 100 * time.Millisecond
	c.SweepInterval = 20 * time.Millisecond
	tb, err := records.New(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	return tb
}

// share copies every record of from into to, as a push/pull exchange would.
func share(from, to *records.Table) {
	to.Delegate().MergeRemoteState(from.Delegate().LocalState(false), false)
}

func waitUntil(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The controller with fake effects and real record tables: it writes the
// node's CNI configuration once the range is known, publishes the range,
// routes another node's published range, and withdraws it when that node
// is gone.
func TestControllerConverges(t *testing.T) {
	a, b := newTable(t, "a"), newTable(t, "b")
	if err := b.Put(RecordKey, PodRange{CIDR: pfx("100.96.2.0/24"), Via: addr("10.0.0.2")}.Encode()); err != nil {
		t.Fatal(err)
	}
	a.Events().NotifyJoin(&memberlist.Node{Name: "b"})
	share(b, a)

	dir := t.TempDir()
	routes := &fakeRoutes{routes: map[netip.Prefix]netip.Addr{}}
	masq := &fakeMasq{}
	cfg := DefaultConfig()
	cfg.Mode, cfg.ClusterCIDR, cfg.NonMasqueradeCIDR, cfg.CNIConfDir = ModeKubenet, "100.96.0.0/11", "100.64.0.0/10", dir
	cfg.Resync = 50 * time.Millisecond
	var src nodeSwitch
	c, err := Start(context.Background(), cfg, Deps{Table: a, Addr: addr("10.0.0.1"), Nodes: &src, Routes: routes, Masq: masq})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })

	// No range yet: no CNI configuration, no record, but b is routed.
	waitUntil(t, "b's range routed", func() error {
		routes.mu.Lock()
		defer routes.mu.Unlock()
		if routes.routes[pfx("100.96.2.0/24")] != addr("10.0.0.2") {
			return errors.New("no route")
		}
		return nil
	})
	conf := filepath.Join(dir, filepath.Base(cni.KubenetConfigPath))
	if _, err := os.Stat(conf); !os.IsNotExist(err) {
		t.Fatalf("CNI configuration written before the range is known: %v", err)
	}
	if _, ok := a.Get("a", RecordKey); ok {
		t.Fatal("record published before the range is known")
	}
	if st := c.Status(); !strings.Contains(st.Errors["node"], "no pod range") || c.Health() != nil {
		t.Fatalf("waiting is reported as %+v, health %v", st.Errors, c.Health())
	}

	src.set(pfx("100.96.1.0/24"))
	waitUntil(t, "the range is published and the CNI configuration written", func() error {
		r, ok := a.Get("a", RecordKey)
		if !ok {
			return errors.New("no record")
		}
		if p, err := ParsePodRange(r.Value); err != nil || p.CIDR != pfx("100.96.1.0/24") || p.Via != addr("10.0.0.1") {
			return errors.New("record " + string(r.Value))
		}
		b, err := os.ReadFile(conf)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), `"subnet": "100.96.1.0/24"`) {
			return errors.New("configuration lacks the node range:\n" + string(b))
		}
		return nil
	})
	masq.mu.Lock()
	if masq.calls == 0 || masq.args != [2]netip.Prefix{pfx("100.96.0.0/11"), pfx("100.64.0.0/10")} {
		t.Errorf("masquerade calls %d with %v", masq.calls, masq.args)
	}
	masq.mu.Unlock()

	// A route added by someone else is left alone (the table only holds
	// owned routes, so this checks the diff keeps nothing it does not want).
	routes.mu.Lock()
	routes.routes[pfx("100.96.7.0/24")] = addr("10.0.0.7")
	routes.mu.Unlock()
	waitUntil(t, "a stale owned route withdrawn", func() error {
		routes.mu.Lock()
		defer routes.mu.Unlock()
		if _, ok := routes.routes[pfx("100.96.7.0/24")]; ok {
			return errors.New("still there")
		}
		return nil
	})

	// b leaves: after the leave grace its records are withdrawn, and so is
	// its route.
	a.Events().NotifyLeave(&memberlist.Node{Name: "b"})
	waitUntil(t, "b's route withdrawn", func() error {
		routes.mu.Lock()
		defer routes.mu.Unlock()
		if len(routes.routes) != 0 {
			return errors.New("routes left")
		}
		return nil
	})

	// A route that cannot be installed makes the daemon unhealthy.
	routes.mu.Lock()
	routes.fail = errors.New("network is unreachable")
	routes.mu.Unlock()
	a.Events().NotifyJoin(&memberlist.Node{Name: "b"})
	b.Put(RecordKey, PodRange{CIDR: pfx("100.96.2.0/24"), Via: addr("10.0.0.22")}.Encode())
	share(b, a)
	waitUntil(t, "unhealthy on a route failure", func() error {
		if err := c.Health(); err == nil || !strings.Contains(err.Error(), "unreachable") {
			return errors.New("healthy")
		}
		return nil
	})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c.Close() // twice is fine
}

// nodeSwitch is a NodeSource whose range the test sets.
type nodeSwitch struct {
	mu sync.Mutex
	p  netip.Prefix
}

func (n *nodeSwitch) set(p netip.Prefix) { n.mu.Lock(); n.p = p; n.mu.Unlock() }
func (n *nodeSwitch) String() string     { return "test" }
func (n *nodeSwitch) PodCIDR(ctx context.Context) (netip.Prefix, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return StaticNode(n.p).PodCIDR(ctx)
}

// Without iptables the controller still runs (routes, CNI configuration)
// and reports the masquerade failure in its status and health.
func TestControllerWithoutIPTablesRunsDegraded(t *testing.T) {
	a := newTable(t, "a")
	cfg := DefaultConfig()
	cfg.Mode, cfg.ClusterCIDR, cfg.NonMasqueradeCIDR, cfg.CNIConfDir = ModeKubenet, "100.96.0.0/11", "100.64.0.0/10", t.TempDir()
	c, err := Start(context.Background(), cfg, Deps{Table: a, Addr: addr("10.0.0.1"), Nodes: StaticNode(pfx("100.96.1.0/24")),
		Routes: &fakeRoutes{routes: map[netip.Prefix]netip.Addr{}}, Masq: failingMasq{errors.New("iptables: executable file not found")}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st := c.Status()
	if st.Range != "100.96.1.0/24" || st.CNIConfig == "" {
		t.Fatalf("status %+v", st)
	}
	if err := c.Health(); err == nil || !strings.Contains(err.Error(), "masquerade") || !strings.Contains(err.Error(), "iptables") {
		t.Fatalf("health %v", err)
	}
}
