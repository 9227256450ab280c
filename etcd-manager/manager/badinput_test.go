package manager_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/etcd-manager/identity"
	"github.com/kopsnode/agents/etcd-manager/manager"
	"github.com/kopsnode/agents/pkg/store"
)

// TestUnknownVersionRefused: a spec naming an etcd version that is not
// installed creates nothing and reports the version and the directory.
func TestUnknownVersionRefused(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "127.44.10")
	c.SetSpec(1, "3.5.99")
	in := c.Start(1)
	c.Eventually(converge, "error naming the version", func() error {
		st, _ := in.M.Status(context.Background())
		want := fmt.Sprintf("etcd version 3.5.99 is not installed: %s not found", filepath.Join(c.BinRoot, "v3.5.99", "etcd"))
		if !strings.Contains(st.LastError, want) {
			return fmt.Errorf("last error %q", st.LastError)
		}
		return nil
	})
	if _, ok := c.Created(); ok {
		t.Fatal("a cluster was created for an unknown version")
	}
	if in.M.EtcdPid() != 0 {
		t.Fatal("etcd runs")
	}
}

// TestCorruptStateFileRefused: an instance whose state file is corrupt does
// not start, says which file, and changes nothing on disk.
func TestCorruptStateFileRefused(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "127.44.11")
	cfg := c.Config("m1", c.IP(1))
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "etcd", "member"), 0o700); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(cfg.DataDir, identity.FileName)
	if err := os.WriteFile(p, []byte(`{"id": "m1", "clusterToken": `), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := manager.Start(context.Background(), cfg)
	if err == nil {
		_ = m.Close()
		t.Fatal("started with a corrupt state file")
	}
	if !errors.Is(err, identity.ErrCorrupt) || !strings.Contains(err.Error(), p) {
		t.Fatalf("error %v does not name %s", err, p)
	}
	if b, _ := os.ReadFile(p); string(b) != `{"id": "m1", "clusterToken": ` {
		t.Fatalf("state file changed: %q", b)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "etcd", "member")); err != nil {
		t.Fatalf("etcd data touched: %v", err)
	}
}

// TestBadSpecLeavesEtcdRunning: an impossible member count written into the
// store is reported; etcd keeps running and serving, nothing is removed.
func TestBadSpecLeavesEtcdRunning(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "127.44.12")
	c.SetSpec(1, version)
	in := c.Start(1)
	c.WaitMembers(converge, "m1")
	c.Put("/before", "bad-spec")
	pid := in.M.EtcdPid()
	if _, err := c.Store.Put(context.Background(), c.Layout.SpecKey(), strings.NewReader(`{"memberCount": 4, "etcdVersion": "`+version+`"}`), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	c.Eventually(converge, "error naming the field", func() error {
		st, _ := in.M.Status(context.Background())
		if !strings.Contains(st.LastError, "memberCount: 4 is not one of 1, 3, 5") || !strings.Contains(st.LastError, "etcd-cluster-spec") {
			return fmt.Errorf("last error %q", st.LastError)
		}
		return nil
	})
	// Several more ticks: still the same etcd, still serving.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if got := in.M.EtcdPid(); got != pid {
			t.Fatalf("etcd pid changed from %d to %d", pid, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.ExpectKey(converge, "/before", "bad-spec", "m1")
	// A good spec again: the instance leads again.
	c.SetSpec(1, version)
	c.WaitLeader(converge)
}
