package tasks

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/nodeup/internal/nodeuptest"
	"github.com/kopsnode/agents/pkg/pki"
)

func TestKubeconfigIssuedOnceAndRenewedWhenStale(t *testing.T) {
	s, _ := nodeuptest.Store(t)
	now := time.Now()
	clock := func() time.Time { return now }
	ks, err := pki.NewKeystore(s, "c/pki", nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	e, _ := env(t, root)
	k := &Kubeconfig{Path: "/var/lib/kubelet/kubeconfig", Server: "https://127.0.0.1", User: "system:node:n1", Groups: []string{"system:nodes"}, CA: pki.CAKubernetes, Keystore: ks, Now: clock}
	d := converge(t, e, k).(*KubeconfigDiff)
	if d.Reason != "missing" {
		t.Fatal(d.Reason)
	}
	p := filepath.Join(root, "var/lib/kubelet/kubeconfig")
	first, _ := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 || !strings.Contains(string(first), "client-key-data") {
		t.Fatalf("mode %v", fi.Mode())
	}
	// Re-run: kept as is.
	if d, err := k.Find(context.Background(), e); err != nil || d != nil {
		t.Fatalf("re-run diff %v %v", d, err)
	}
	// Another server: re-issued.
	k.Server = "https://api.internal.c"
	if d := converge(t, e, k).(*KubeconfigDiff); !strings.Contains(d.Reason, "server") {
		t.Fatal(d.Reason)
	}
	// Close to expiry: re-issued.
	now = now.Add(300 * 24 * time.Hour)
	if d := converge(t, e, k).(*KubeconfigDiff); !strings.Contains(d.Reason, "rotation") {
		t.Fatal(d.Reason)
	}
	// Nothing was issued in the first place without a keystore.
	k2 := &Kubeconfig{Path: "/k2", Server: "https://x", User: "u", CA: pki.CAKubernetes}
	d2, _ := k2.Find(context.Background(), e)
	if err := k2.Apply(context.Background(), e, d2); err == nil || !strings.Contains(err.Error(), "/k2") {
		t.Fatalf("err = %v", err)
	}
}
