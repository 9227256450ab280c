package membership

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/gossip/hlc"
	"github.com/kopsnode/agents/gossip/records"
	"github.com/kopsnode/agents/gossip/seeds"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/file"
)

func newKey(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func testLogger() *slog.Logger {
	if os.Getenv("GOSSIP_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

type member struct {
	node  *Node
	table *records.Table
}

// keyStore returns a file store holding ks at the cluster's keys object.
func keyStore(t *testing.T, ks KeySet) (store.Store, string) {
	t.Helper()
	st, err := file.New(t.TempDir(), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	key := KeysObject("test.k8s.local")
	if err := WriteKeys(context.Background(), st, key, ks); err != nil {
		t.Fatal(err)
	}
	return st, key
}

func fastConfig(name string) Config {
	cfg := DefaultConfig(name)
	cfg.BindAddr = "127.0.0.1"
	cfg.BindPort = 0
	cfg.GossipInterval = 50 * time.Millisecond
	cfg.ProbeInterval = 200 * time.Millisecond
	cfg.ProbeTimeout = 100 * time.Millisecond
	cfg.PushPullInterval = time.Second
	cfg.SuspicionMult = 2
	cfg.RejoinInterval = 500 * time.Millisecond
	cfg.KeyPollInterval = time.Hour // tests call ReloadKeys
	return cfg
}

func startMember(t *testing.T, name string, keys KeySource, seedList ...string) member {
	t.Helper()
	rc := records.DefaultConfig(name)
	rc.Clock = hlc.New(nil, time.Minute)
	rc.LeaveGrace = time.Second
	rc.SweepInterval = 100 * time.Millisecond
	tb, err := records.New(rc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fastConfig(name)
	cfg.Keys = keys
	cfg.Seeds = seeds.Static(seedList)
	cfg.Delegate = tb.Delegate()
	cfg.Events = tb.Events()
	cfg.Logger = testLogger().With("node", name)
	n, err := Start(context.Background(), cfg)
	if err != nil {
		tb.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	t.Cleanup(func() {
		n.Close()
		tb.Close()
	})
	return member{node: n, table: tb}
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

func TestEncryptedMembersReplicateRecords(t *testing.T) {
	st, key := keyStore(t, KeySet{Primary: newKey(t)})
	keys := StoreKeys{Store: st, Key: key}
	a := startMember(t, "a", keys)
	b := startMember(t, "b", keys, a.node.Addr())
	c := startMember(t, "c", keys, a.node.Addr())
	waitFor(t, 10*time.Second, "3 members", func() bool { return c.node.NumAlive() == 3 && a.node.NumAlive() == 3 })
	if err := a.table.Put("dns/a.internal", []byte("127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a's record on b and c", func() bool {
		_, okb := b.table.Get("a", "dns/a.internal")
		_, okc := c.table.Get("a", "dns/a.internal")
		return okb && okc
	})
}

// A node holding a different key cannot join and never sees a record.
func TestNodeWithoutKeyIsRefused(t *testing.T) {
	st, key := keyStore(t, KeySet{Primary: newKey(t)})
	a := startMember(t, "a", StoreKeys{Store: st, Key: key})
	a.table.Put("secret", []byte("v"))
	st2, key2 := keyStore(t, KeySet{Primary: newKey(t)})
	intruder := startMember(t, "intruder", StoreKeys{Store: st2, Key: key2})
	if n, err := intruder.node.Join([]string{a.node.Addr()}); err == nil || n != 0 {
		t.Fatalf("join with the wrong key: joined %d, err %v; want refusal", n, err)
	}
	// Give gossip the time of several rounds and push/pulls, then check
	// nothing leaked either way.
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if intruder.node.NumAlive() != 1 || a.node.NumAlive() != 1 {
			t.Fatalf("membership leaked: intruder sees %d, a sees %d", intruder.node.NumAlive(), a.node.NumAlive())
		}
		if _, ok := intruder.table.Get("a", "secret"); ok {
			t.Fatal("intruder received a record")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Rotation without restart: add the new key, switch the primary, remove the
// old one; afterwards only holders of the new key can join.
func TestKeyRotationWithoutRestart(t *testing.T) {
	ctx := context.Background()
	oldKey, newK := newKey(t), newKey(t)
	st, key := keyStore(t, KeySet{Primary: oldKey})
	keys := StoreKeys{Store: st, Key: key}
	a := startMember(t, "a", keys)
	b := startMember(t, "b", keys, a.node.Addr())
	waitFor(t, 10*time.Second, "a and b joined", func() bool { return a.node.NumAlive() == 2 && b.node.NumAlive() == 2 })

	steps := []KeySet{
		{Primary: oldKey, Keys: []string{oldKey, newK}},
		{Primary: newK, Keys: []string{oldKey, newK}},
		{Primary: newK},
	}
	for i, ks := range steps {
		if err := WriteKeys(ctx, st, key, ks); err != nil {
			t.Fatal(err)
		}
		for _, m := range []member{a, b} {
			if err := m.node.ReloadKeys(ctx); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
		}
		v := "step" + string(rune('0'+i))
		a.table.Put("rotation", []byte(v))
		waitFor(t, 10*time.Second, "record after rotation step "+v, func() bool {
			r, ok := b.table.Get("a", "rotation")
			return ok && string(r.Value) == v
		})
	}
	if got := len(a.node.kr.GetKeys()); got != 1 {
		t.Fatalf("a holds %d keys after removing the old one, want 1", got)
	}
	stNew, keyNew := keyStore(t, KeySet{Primary: newK})
	c := startMember(t, "c", StoreKeys{Store: stNew, Key: keyNew}, a.node.Addr())
	waitFor(t, 10*time.Second, "c with the new key joins", func() bool { return c.node.NumAlive() == 3 })
	stOld, keyOld := keyStore(t, KeySet{Primary: oldKey})
	d := startMember(t, "d", StoreKeys{Store: stOld, Key: keyOld})
	if n, err := d.node.Join([]string{a.node.Addr()}); err == nil || n != 0 {
		t.Fatalf("node with the removed key joined (%d, %v)", n, err)
	}
}

func TestKilledMemberRecordsWithdrawn(t *testing.T) {
	st, key := keyStore(t, KeySet{Primary: newKey(t)})
	keys := StoreKeys{Store: st, Key: key}
	a := startMember(t, "a", keys)
	b := startMember(t, "b", keys, a.node.Addr())
	waitFor(t, 10*time.Second, "b's record on a", func() bool {
		b.table.Put("dns/b", []byte("127.0.0.2"))
		_, ok := a.table.Get("b", "dns/b")
		return ok
	})
	b.node.Kill()
	waitFor(t, 15*time.Second, "b's record withdrawn on a", func() bool {
		_, ok := a.table.Get("b", "dns/b")
		return !ok
	})
}

func TestConfigValidate(t *testing.T) {
	cfg := DefaultConfig("")
	cfg.BindAddr = "not-an-ip"
	cfg.GossipInterval = 0
	err := cfg.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{"membership.NodeName", "membership.BindAddr", "membership.Keys", "membership.GossipInterval", "membership.Delegate"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

func TestParseKeySetNamesBadField(t *testing.T) {
	_, err := ParseKeySet([]byte("primary: "+newKey(t)+"\nkeys: [\"c2hvcnQ=\"]\n"), "file:///s/c/secrets/gossip-keys")
	if err == nil || !strings.Contains(err.Error(), "keys[0]") || !strings.Contains(err.Error(), "file:///s/c/secrets/gossip-keys") {
		t.Fatalf("err = %v, want one naming keys[0] and the source", err)
	}
}
