package gossipkeys

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/kopsnode/agents/gossip/hlc"
	"github.com/kopsnode/agents/gossip/membership"
	"github.com/kopsnode/agents/gossip/records"
	"github.com/kopsnode/agents/gossip/seeds"
)

type member struct {
	name  string
	node  *membership.Node
	table *records.Table
}

// startMember starts an encrypted gossip member on 127.0.0.1 with short
// timings, reading its keys from keys. Keys are reloaded by the test
// (ReloadKeys), not by the hourly poll, so each step is applied before the
// next one is written, as waiting a poll interval does in production.
func startMember(t *testing.T, name string, keys membership.KeySource, seedList ...string) member {
	t.Helper()
	rc := records.DefaultConfig(name)
	rc.Clock = hlc.New(nil, time.Minute)
	rc.LeaveGrace = time.Second
	rc.SweepInterval = 100 * time.Millisecond
	tb, err := records.New(rc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := membership.DefaultConfig(name)
	cfg.BindAddr = "127.0.0.1"
	cfg.BindPort = 0
	cfg.GossipInterval = 50 * time.Millisecond
	cfg.ProbeInterval = 200 * time.Millisecond
	cfg.ProbeTimeout = 100 * time.Millisecond
	cfg.PushPullInterval = time.Second
	cfg.SuspicionMult = 2
	cfg.RejoinInterval = 500 * time.Millisecond
	cfg.KeyPollInterval = time.Hour
	cfg.Keys = keys
	cfg.Seeds = seeds.Static(seedList)
	cfg.Delegate = tb.Delegate()
	cfg.Events = tb.Events()
	cfg.Logger = slog.New(slog.DiscardHandler)
	n, err := membership.Start(context.Background(), cfg)
	if err != nil {
		tb.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	t.Cleanup(func() {
		n.Close()
		tb.Close()
	})
	return member{name: name, node: n, table: tb}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// soleKey is a keyring holding only key, in a store of its own.
func soleKey(t *testing.T, key string) membership.KeySource {
	t.Helper()
	st := newStore(t, "")
	obj := membership.KeysObject(testCluster)
	if err := membership.WriteKeys(context.Background(), st, obj, membership.KeySet{Primary: key}); err != nil {
		t.Fatal(err)
	}
	return membership.StoreKeys{Store: st, Key: obj}
}

// The full rotation through the command, against running members that
// keep exchanging records at every step: after `use` a node holding only
// the new key can join, after `remove` a node holding only the old key
// cannot.
func TestRotationWithRunningMembers(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if code, _, errOut := runCLI(t, append([]string{"create"}, storeFlags(dir)...)...); code != 0 {
		t.Fatal(errOut)
	}
	kr := ForCluster(newStore(t, dir), testCluster)
	oldKey := load(t, kr).Primary
	keys := membership.StoreKeys{Store: kr.Store, Key: kr.Key}
	a := startMember(t, "a", keys)
	b := startMember(t, "b", keys, a.node.Addr())
	members := []member{a, b}
	var newKey string
	waitFor(t, 10*time.Second, "a and b joined", func() bool { return a.node.NumAlive() == 2 && b.node.NumAlive() == 2 })

	for _, step := range []Step{StepAdd, StepUse, StepRemove} {
		if code, out, errOut := runCLI(t, append([]string{"rotate", "--step", string(step)}, storeFlags(dir)...)...); code != 0 {
			t.Fatalf("rotate --step %s: exit %d\n%s%s", step, code, out, errOut)
		}
		for _, m := range members {
			if err := m.node.ReloadKeys(ctx); err != nil {
				t.Fatalf("%s applying --step %s: %v", m.name, step, err)
			}
		}
		if step == StepAdd {
			ks := load(t, kr)
			newKey = ks.Keys[len(ks.Keys)-1]
		}
		if step == StepUse {
			c := startMember(t, "c", soleKey(t, newKey), a.node.Addr())
			waitFor(t, 10*time.Second, "c, holding only the new key, joins after use", func() bool {
				return c.node.NumAlive() == 3 && a.node.NumAlive() == 3
			})
			members = append(members, c)
		}
		for _, src := range members {
			v := string(step)
			if err := src.table.Put("rotation", []byte(v)); err != nil {
				t.Fatal(err)
			}
			for _, dst := range members {
				waitFor(t, 10*time.Second, src.name+"'s record on "+dst.name+" after "+v, func() bool {
					r, ok := dst.table.Get(src.name, "rotation")
					return ok && string(r.Value) == v
				})
			}
		}
	}
	if ks := load(t, kr); ks.Primary != newKey || len(ks.Keys) != 0 {
		t.Fatal("after the rotation the keyring is not the new key alone")
	}
	d := startMember(t, "d", soleKey(t, oldKey))
	if n, err := d.node.Join([]string{a.node.Addr()}); err == nil || n != 0 {
		t.Fatalf("node with the removed key joined (%d, %v)", n, err)
	}
	for _, m := range members {
		if got := m.node.NumAlive(); got != 3 {
			t.Fatalf("%s sees %d members after the rotation, want 3", m.name, got)
		}
	}
}
