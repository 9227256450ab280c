package app

import (
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/internal/nodeuptest"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/testtools"
)

// TestFullDiskFailsCleanly converges onto a root that is a 4 MiB tmpfs while
// the kubelet asset is 8 MiB: the download cannot fit. The run must fail
// with an error naming the asset and the disk problem, leave no partial file
// (in the cache or at the binary's path), no temp files, and no kubelet unit
// pointing at a missing binary.
func TestFullDiskFailsCleanly(t *testing.T) {
	testtools.RequireRoot(t)
	f := newFixture(t, "node")
	root := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", root).CombinedOutput(); err != nil {
		t.Fatalf("mounting a small tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(root, 0); err != nil {
			t.Errorf("unmounting %s: %v", root, err)
		}
	})
	f.root = root

	big := make([]byte, 8<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	for i := range f.assets {
		if f.assets[i].Name == "kubelet" {
			f.assets[i].Data = big
		}
	}
	f.srv.Set("kubelet", big)
	f.cfg = nodeuptest.NodeConfig("test.k8s.local", "g1", "node", f.assets, f.srv.URL)
	nodeuptest.Put(t, f.store, ConfigKey("test.k8s.local", "g1"), f.cfg)

	o := f.opts()
	o.ConfigHash = config.FileHash([]byte(f.cfg))
	st, err := Apply(context.Background(), o)
	if err == nil {
		t.Fatal("apply onto a full disk succeeded")
	}
	var kubelet *engine.Result
	for i := range st.Tasks {
		if st.Tasks[i].ID == "asset:kubelet" {
			kubelet = &st.Tasks[i]
		}
	}
	if kubelet == nil || kubelet.Status != engine.StatusFailed {
		t.Fatalf("asset:kubelet = %+v, want failed", kubelet)
	}
	if !strings.Contains(kubelet.Error, "no space left on device") || !strings.Contains(kubelet.Error, f.srv.URL+"/kubelet") {
		t.Fatalf("asset:kubelet error %q does not name the URL and the full disk", kubelet.Error)
	}
	if _, err := os.Stat(filepath.Join(root, "usr/local/bin/kubelet")); err == nil {
		t.Error("a kubelet binary was installed from a failed download")
	}
	if _, err := os.Stat(filepath.Join(root, "etc/systemd/system/kubelet.service")); err == nil {
		t.Error("kubelet.service written without its binary")
	}
	cache := filepath.Join(root, "var/cache/nodeup/assets")
	if _, err := os.Stat(filepath.Join(cache, f.assets[0].SHA256())); err == nil {
		t.Error("a partial kubelet download is in the cache under its hash")
	}
	filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err == nil && strings.Contains(info.Name(), ".nodeup-") {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
}
