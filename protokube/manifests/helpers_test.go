package manifests

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kopsnode/agents/pkg/config"
)

const testCluster = "manifests.k8s.local"

// syncBuffer is a log sink the daemon writes to while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// writeNodeConfig writes the configuration copy the daemon reads: the
// example control-plane configuration (so it stays valid as the schema
// grows) with this test's cluster, service range and DNS settings.
func writeNodeConfig(t *testing.T, path, clusterDomain, clusterDNS string) {
	t.Helper()
	n, err := config.LoadNodeConfigFile(filepath.Join("..", "..", "examples", "nodeup", "control-plane.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	n.Spec.ClusterName = testCluster
	n.Spec.Networking.ServiceCIDR = "100.64.0.0/13"
	n.Spec.Kubelet.ClusterDomain, n.Spec.Kubelet.ClusterDNS = clusterDomain, clusterDNS
	doc, err := config.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fakeClock is the daemon's settable clock.
type fakeClock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *fakeClock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.now = t }

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
