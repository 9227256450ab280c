package app

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kopsnode/agents/nodeup/tasks"
)

// TestRunRemovesStaleTemporaries plays nodeup killed in the middle of
// atomic writes: the temporaries left beside managed files (one beside a
// kubeconfig, which holds a private key or a token) are gone after the
// next run, and files nodeup does not manage are left alone.
func TestRunRemovesStaleTemporaries(t *testing.T) {
	for _, c := range []struct {
		role  string
		stale []string
	}{
		{"control-plane", []string{
			"/var/lib/kubelet/.kubeconfig.nodeup-2214889",
			"/usr/local/sbin/.runc.nodeup-901",
			"/etc/systemd/system/multi-user.target.wants/.kubelet.service.nodeup-link",
		}},
		{"node", []string{
			"/var/lib/kubelet/.bootstrap-kubeconfig.nodeup-31337",
			"/var/lib/kubelet/.config.yaml.nodeup-5",
			tasks.CacheDir + "/.0123.nodeup-77", // not an asset of this node: kept
		}},
	} {
		t.Run(c.role, func(t *testing.T) {
			f := newFixture(t, c.role)
			f.apply(f.opts())
			// Stale directories of interrupted extractions too.
			var containerd string
			for _, a := range f.assets {
				if a.Name == "containerd" {
					containerd = tasks.CacheDir + "/." + a.SHA256() + ".d.nodeup-4242"
				}
			}
			stale := append([]string{containerd}, c.stale...)
			kept := []string{"/var/lib/kubelet/.unmanaged.nodeup-1", "/var/lib/kubelet/.kubeconfig.nodeup-notdigits"}
			for _, p := range append(append([]string(nil), stale...), kept...) {
				hp := filepath.Join(f.root, p)
				if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(hp, []byte("secret"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if c.role == "node" {
				// The unrelated cache entry stays.
				kept = append(kept, stale[len(stale)-1])
				stale = stale[:len(stale)-1]
			}
			f.apply(f.opts())
			for _, p := range stale {
				if _, err := os.Lstat(filepath.Join(f.root, p)); err == nil {
					t.Errorf("stale %s is still there", p)
				}
			}
			for _, p := range kept {
				if _, err := os.Lstat(filepath.Join(f.root, p)); err != nil {
					t.Errorf("%s was removed: %v", p, err)
				}
			}
		})
	}
}
