package gossipd

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/gossip/localapi"
	"github.com/kopsnode/agents/gossip/membership"
	"github.com/kopsnode/agents/pkg/store/file"
)

// waitEntries polls a daemon's listing under prefix until want accepts it.
func waitEntries(t *testing.T, c localapi.Client, prefix string, what string, want func([]localapi.Entry) bool) []localapi.Entry {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := c.List(context.Background(), prefix)
		if err == nil && want(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: listing %q at %s: %+v, %v", what, prefix, c.Addr, got, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// An agent publishes a record through its node's daemon; another node's
// daemon lists it with its owner; a withdrawn record and one whose lease
// ran out are gone everywhere.
func TestLocalAPIPublishesThroughGossip(t *testing.T) {
	storeDir := t.TempDir()
	st, _ := file.New(storeDir, file.Options{})
	if err := membership.WriteKeys(context.Background(), st, membership.KeysObject("loop.k8s.local"), membership.KeySet{Primary: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}); err != nil {
		t.Fatal(err)
	}
	a, _ := startLoopbackDaemon(t, storeDir, "a")
	b, _ := startLoopbackDaemon(t, storeDir, "b")
	ca, cb := localapi.Client{Addr: a.StatusAddr()}, localapi.Client{Addr: b.StatusAddr()}
	ctx := context.Background()

	if err := ca.Publish(ctx, "agents/etcd-manager/main/main-1", []byte(`{"id":"main-1"}`), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := ca.Publish(ctx, "agents/short", []byte("x"), time.Second); err != nil {
		t.Fatal(err)
	}
	got := waitEntries(t, cb, "agents/etcd-manager/", "b sees a's record", func(es []localapi.Entry) bool { return len(es) == 1 })
	if e := got[0]; e.Owner != "a" || e.Key != "agents/etcd-manager/main/main-1" || string(e.Value) != `{"id":"main-1"}` || !e.OwnerAlive {
		t.Fatalf("entry at b: %+v", e)
	}
	// The lease of agents/short runs out; the other record stays.
	waitEntries(t, cb, "agents/", "the expired record is withdrawn", func(es []localapi.Entry) bool {
		return len(es) == 1 && es[0].Key == "agents/etcd-manager/main/main-1"
	})
	if err := ca.Withdraw(ctx, "agents/etcd-manager/main/main-1"); err != nil {
		t.Fatal(err)
	}
	waitEntries(t, cb, "agents/", "the withdrawn record is gone", func(es []localapi.Entry) bool { return len(es) == 0 })

	// Bad requests name what is wrong.
	for _, c := range []struct {
		key   string
		lease time.Duration
		want  string
	}{{"dns/api.internal.loop.k8s.local.", time.Minute, `must start with "agents/"`}, {"agents//x", time.Minute, "empty path segment"}, {"agents/x", time.Hour, "leaseSeconds"}} {
		err := ca.Publish(ctx, c.key, []byte("v"), c.lease)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("publishing %q for %s: %v, want %q", c.key, c.lease, err, c.want)
		}
	}
}

// Writes from another machine are refused, whatever address the endpoint
// listens on.
func TestLocalAPIRefusesRemoteWrites(t *testing.T) {
	storeDir := t.TempDir()
	st, _ := file.New(storeDir, file.Options{})
	if err := membership.WriteKeys(context.Background(), st, membership.KeysObject("loop.k8s.local"), membership.KeySet{Primary: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}); err != nil {
		t.Fatal(err)
	}
	a, _ := startLoopbackDaemon(t, storeDir, "a")
	mux := http.NewServeMux()
	for p, h := range a.pub.handlers() {
		mux.Handle(p, h)
	}
	for _, method := range []string{http.MethodPut, http.MethodDelete} {
		req := httptest.NewRequest(method, localapi.RecordsPath+"agents/x", strings.NewReader(`{"value":"eA==","leaseSeconds":60}`))
		req.RemoteAddr = "10.0.0.9:40000"
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden {
			t.Errorf("%s from 10.0.0.9: %d %s", method, rec.Code, rec.Body)
		}
	}
	if _, ok := a.Table().Get("a", "agents/x"); ok {
		t.Fatal("a remote write reached the table")
	}
}
