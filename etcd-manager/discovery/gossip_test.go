package discovery_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kopsnode/agents/etcd-manager/discovery"
	"github.com/kopsnode/agents/etcd-manager/harness"
	"github.com/kopsnode/agents/etcd-manager/manager"
	"github.com/kopsnode/agents/gossip/localapi"
	"github.com/kopsnode/agents/gossip/membership"
	"github.com/kopsnode/agents/pkg/store/file"
	"github.com/kopsnode/agents/protokube/gossipd"
)

// startGossip runs protokube's gossip daemon for node name on ip (its own
// loopback address), with the keyring and seed registry in a file store at
// dir, and returns it.
func startGossip(t *testing.T, dir, cluster, name, ip string) *gossipd.Daemon {
	t.Helper()
	st, err := file.New(dir, file.Options{CreateRoot: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg := gossipd.DefaultConfig()
	cfg.Cluster, cfg.Store.URL, cfg.NodeName = cluster, "file://"+dir, name
	cfg.Bind, cfg.StatusAddr = net.JoinHostPort(ip, "0"), net.JoinHostPort(ip, "0")
	cfg.DNSListen, cfg.HostsFile = "", ""
	cfg.LeaveGrace, cfg.Fast = time.Second, true
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	d, err := gossipd.Start(context.Background(), cfg, gossipd.Deps{Store: st})
	if err != nil {
		t.Fatalf("starting gossip on %s: %v", ip, err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func gossipKeys(t *testing.T, dir, cluster string) {
	t.Helper()
	st, err := file.New(dir, file.Options{CreateRoot: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := membership.WriteKeys(context.Background(), st, membership.KeysObject(cluster), membership.KeySet{Primary: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}); err != nil {
		t.Fatal(err)
	}
}

// lookupOnly hides a backend's Register: the managers cannot correct the
// stale store registry, as when its writes go to a store they no longer
// reach.
type lookupOnly struct{ d discovery.Discovery }

func (l lookupOnly) Peers(ctx context.Context) ([]discovery.Peer, error) { return l.d.Peers(ctx) }

// Instances publish themselves through their node's gossip daemon and read
// the others back; a union of gossip and a backend with other addresses
// takes gossip's, and registers with both.
func TestGossipDiscovery(t *testing.T) {
	dir, cluster := t.TempDir(), "gossip.k8s.local"
	gossipKeys(t, dir, cluster)
	a := startGossip(t, dir, cluster, "node-a", "127.0.0.1")
	b := startGossip(t, dir, cluster, "node-b", "127.0.0.1")
	ga := discovery.Gossip{Client: localapi.Client{Addr: a.StatusAddr()}, EtcdCluster: "main", Lease: time.Minute}
	gb := discovery.Gossip{Client: localapi.Client{Addr: b.StatusAddr()}, EtcdCluster: "main", Lease: time.Minute}
	events := discovery.Gossip{Client: gb.Client, EtcdCluster: "events", Lease: time.Minute}
	ctx := context.Background()
	for _, r := range []struct {
		g discovery.Gossip
		p discovery.Peer
	}{{ga, discovery.Peer{ID: "main-1", ManagerAddr: "10.0.0.1:3994"}}, {gb, discovery.Peer{ID: "main-2", ManagerAddr: "10.0.0.2:3994"}}, {events, discovery.Peer{ID: "events-2", ManagerAddr: "10.0.0.2:3995"}}} {
		if err := r.g.Register(ctx, r.p); err != nil {
			t.Fatal(err)
		}
	}
	want := []discovery.Peer{{ID: "main-1", ManagerAddr: "10.0.0.1:3994"}, {ID: "main-2", ManagerAddr: "10.0.0.2:3994"}}
	waitPeers(t, ga, want)
	waitPeers(t, gb, want)
	waitPeers(t, events, []discovery.Peer{{ID: "events-2", ManagerAddr: "10.0.0.2:3995"}})

	stale := discovery.Static{{ID: "main-1", ManagerAddr: "10.9.9.1:3994"}, {ID: "main-9", ManagerAddr: "10.9.9.9:3994"}}
	u := discovery.Union{ga, stale}
	got, err := u.Peers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(append(want, stale[1])) {
		t.Fatalf("union %v, want gossip's addresses first: %v", got, append(want, stale[1]))
	}

	// Register reaches every registrar and reports the one that failed.
	st, err := file.New(filepath.Join(t.TempDir(), "store"), file.Options{CreateRoot: true})
	if err != nil {
		t.Fatal(err)
	}
	reg := discovery.NewStoreRegistry(st, "peers/", time.Minute, nil)
	down := discovery.Gossip{Client: localapi.Client{Addr: "127.0.0.1:1"}, EtcdCluster: "main", Lease: time.Minute}
	err = discovery.Union{down, reg}.Register(ctx, discovery.Peer{ID: "main-3", ManagerAddr: "10.0.0.3:3994"})
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("a failed registration is not reported: %v", err)
	}
	if ps, _ := reg.Peers(ctx); len(ps) != 1 || ps[0].ID != "main-3" {
		t.Fatalf("the store registry did not get the registration: %v", ps)
	}
}

func waitPeers(t *testing.T, d discovery.Discovery, want []discovery.Peer) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := d.Peers(context.Background())
		if err == nil && fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("peers %v (%v), want %v", got, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A cluster whose store registry is stale still forms through gossip:
// three etcd-managers with real etcd, each with its own gossip daemon on
// its own address, while the store registry keeps naming every member at
// an address where nothing listens (refreshed all along, so it never
// expires). Each manager's discovery is the union of gossip and the store
// registry, gossip first, as nodeup configures it on gossip clusters.
func TestClusterFormsThroughGossipWithStaleStoreRegistry(t *testing.T) {
	const version = "3.6.16"
	dir, cluster := t.TempDir(), "test.k8s.local"
	gossipKeys(t, dir, cluster)
	var mu sync.Mutex
	nodes := map[string]*gossipd.Daemon{} // by member ID
	c := harness.New(t, harness.Options{IPPrefix: "127.44.201", Cluster: cluster, Versions: []string{version}, Mutate: func(cfg *manager.Config) {
		mu.Lock()
		defer mu.Unlock()
		g := discovery.Gossip{Client: localapi.Client{Addr: nodes[cfg.ID].StatusAddr()}, EtcdCluster: cfg.EtcdCluster, Lease: 4 * cfg.LeaseDuration}
		cfg.Discovery = discovery.Union{g, lookupOnly{cfg.Discovery}}
	}})
	ids := []string{"m1", "m2", "m3"}
	for i, id := range ids {
		d := startGossip(t, dir, cluster, "node-"+id, c.IP(i+1))
		mu.Lock()
		nodes[id] = d
		mu.Unlock()
	}
	// The stale registry: every member at another address, kept fresh.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	stale := discovery.NewStoreRegistry(c.Store, c.Layout.PeersPrefix(), time.Hour, nil)
	staleAddr := func(i int) string {
		return net.JoinHostPort("127.44.202."+strconv.Itoa(i+2), strconv.Itoa(harness.ManagerPort))
	}
	refresh := func() {
		for i, id := range ids {
			if err := stale.Register(ctx, discovery.Peer{ID: id, ManagerAddr: staleAddr(i)}); err != nil && ctx.Err() == nil {
				t.Errorf("writing the stale registry: %v", err)
			}
		}
	}
	refresh()
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(200 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				refresh()
			}
		}
	}()

	c.SetSpec(3, version)
	for i := range ids {
		c.Start(i + 1)
	}
	c.WaitMembers(2*time.Minute, ids...)
	c.Put("/formed", "through gossip")
	c.ExpectKey(30*time.Second, "/formed", "through gossip", ids...)

	// The store registry was stale throughout: it names every member at
	// its stale address.
	ps, err := discovery.NewStoreRegistry(c.Store, c.Layout.PeersPrefix(), time.Hour, nil).Peers(context.Background())
	if err != nil || len(ps) != 3 {
		t.Fatalf("store registry %v, %v", ps, err)
	}
	for i, p := range ps {
		if p.ManagerAddr != staleAddr(i) {
			t.Fatalf("the store registry was corrected (%v): the test proves nothing", ps)
		}
	}
}
