package identity

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kopsnode/agents/volumes"
)

func TestLoadOrCreateIsStable(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreate(dir, ""); err == nil {
		t.Fatal("LoadOrCreate without an id made one up; the identity comes from the volume")
	}
	if _, err := os.Stat(filepath.Join(dir, FileName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state file written without an id: %v", err)
	}
	s, err := LoadOrCreate(dir, "main-1")
	if err != nil || s.ID != "main-1" {
		t.Fatalf("LoadOrCreate = %+v, %v", s, err)
	}
	s2, err := LoadOrCreate(dir, "main-1")
	if err != nil || s2.ID != s.ID {
		t.Fatalf("second load = %+v, %v; want id %s", s2, err, s.ID)
	}
	if _, err := LoadOrCreate(dir, "main-2"); err == nil || !strings.Contains(err.Error(), `belongs to instance "main-1", not "main-2"`) {
		t.Fatalf("load with another id = %v", err)
	}
	s2.ClusterToken = "tok"
	if err := Save(dir, s2); err != nil {
		t.Fatal(err)
	}
	s3, ok, err := Load(dir)
	if err != nil || !ok || s3 != s2 {
		t.Fatalf("Load = %+v, %v, %v; want %+v", s3, ok, err, s2)
	}
}

// TestCorruptStateFile: a corrupt file is a clear error naming it, and is
// left exactly as it was.
func TestCorruptStateFile(t *testing.T) {
	for name, content := range map[string]string{
		"garbage":   "{not json",
		"bad id":    `{"id": "Bad ID"}`,
		"unknown":   `{"id": "a", "surprise": 1}`,
		"truncated": `{"id": "a", "clusterTo`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, FileName)
			if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadOrCreate(dir, "a")
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), p) {
				t.Fatalf("LoadOrCreate = %v, want ErrCorrupt naming %s", err, p)
			}
			b, _ := os.ReadFile(p)
			if string(b) != content {
				t.Fatalf("state file changed to %q", b)
			}
		})
	}
}

// TestFromVolume: the identity is the slot of the volume identity file at
// the data directory; a missing file, another cluster's or etcd cluster's
// volume, or a bad file is an error naming the file.
func TestFromVolume(t *testing.T) {
	write := func(t *testing.T, sel volumes.Selector) string {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, volumes.IdentityFileName), volumes.NewIdentity(sel, "", "/dev/x").Marshal(), 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	dir := write(t, volumes.Selector{Cluster: "c.k8s.local", EtcdCluster: "main", Slot: "main-2"})
	id, err := FromVolume(dir, "c.k8s.local", "main")
	if err != nil || id != "main-2" {
		t.Fatalf("FromVolume = %q, %v; want main-2", id, err)
	}
	p := filepath.Join(dir, volumes.IdentityFileName)
	for name, tc := range map[string]struct{ dir, cluster, etcd, want string }{
		"other cluster":      {dir, "d.k8s.local", "main", "belongs to cluster"},
		"other etcd cluster": {dir, "c.k8s.local", "events", "belongs to cluster"},
		"no volume":          {t.TempDir(), "c.k8s.local", "main", "no volume identity"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := FromVolume(tc.dir, tc.cluster, tc.etcd)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), filepath.Join(tc.dir, volumes.IdentityFileName)) {
				t.Fatalf("FromVolume = %v, want an error containing %q and the path", err, tc.want)
			}
		})
	}
	if err := os.WriteFile(p, []byte(`{"apiVersion":"volumes.kopsnode.io/v1","kind":"VolumeIdentity","cluster":"c.k8s.local","etcdCluster":"main","member":"host-a"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := FromVolume(dir, "c.k8s.local", "main"); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("FromVolume of an identity without a slot = %v, want an error naming %s", err, p)
	}
}
