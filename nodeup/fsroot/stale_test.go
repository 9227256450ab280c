package fsroot

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestRemoveStaleTemps(t *testing.T) {
	root := t.TempDir()
	f, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(p string, dir bool) {
		hp := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(hp), 0o755)
		if dir {
			if err := os.Mkdir(hp, 0o755); err != nil {
				t.Fatal(err)
			}
			return
		}
		if err := os.WriteFile(hp, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	stale := []string{
		"/var/lib/kubelet/.kubeconfig.nodeup-123456",
		"/usr/local/sbin/.runc.nodeup-99",
		"/usr/local/sbin/.runc.nodeup-link",
		"/var/cache/nodeup/assets/.abc.d.nodeup-42",
	}
	for _, p := range stale {
		mk(p, p == "/var/cache/nodeup/assets/.abc.d.nodeup-42")
	}
	kept := []string{
		"/var/lib/kubelet/kubeconfig",
		"/var/lib/kubelet/.kubeconfig.nodeup-abc", // not ours: not digits
		"/var/lib/kubelet/.config.yaml.nodeup-1",  // a path not managed here
		"/usr/local/sbin/.runc.extra.nodeup-5",    // another name
		"/usr/local/sbin/runc",
	}
	for _, p := range kept {
		mk(p, false)
	}
	got, err := f.RemoveStaleTemps("/var/lib/kubelet/kubeconfig", "/usr/local/sbin/runc", "/var/cache/nodeup/assets/abc.d", "/no/such/dir/file")
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(stale)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("removed %v, want %v", got, want)
	}
	for _, p := range stale {
		if f.Exists(p) {
			t.Errorf("%s is still there", p)
		}
	}
	for _, p := range kept {
		if !f.Exists(p) {
			t.Errorf("%s was removed", p)
		}
	}
	// A real interrupted write's temporary matches the pattern.
	hooked := f.WithHooks(Hooks{BeforeRename: func(tmp, target string) error {
		// Simulate a kill: keep a copy of the temporary as a stale one.
		b, _ := os.ReadFile(tmp)
		return os.WriteFile(tmp+"0", b, 0o600)
	}})
	if err := hooked.WriteFile("/etc/x.conf", []byte("y"), 0o644, Owner{-1, -1}); err != nil {
		t.Fatal(err)
	}
	got, err = f.RemoveStaleTemps("/etc/x.conf")
	if err != nil || len(got) != 1 {
		t.Fatalf("removed %v, %v; want the copy of a real temporary", got, err)
	}
}
