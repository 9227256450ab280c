package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kopsnode/agents/volumes"
)

// TestRunTakesItsIdentityFromTheVolume: without --id, run reads the member
// slot from the volume identity file at the data directory; no file, or a
// volume of another cluster, is an error naming the file, before anything
// starts. (The manager running under its volume's slot is tested in
// volumes/slots' replacement test, with real etcd.)
func TestRunTakesItsIdentityFromTheVolume(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	args := []string{"run", "--cluster-name", "c.example", "--data-dir", data, "--store", "file://" + dir}
	p := filepath.Join(data, volumes.IdentityFileName)
	if _, errs, code := run(t, EtcdManager(), args...); code == 0 || !strings.Contains(errs, "no volume identity at "+p) {
		t.Fatalf("run without --id or volume: code %d, %q", code, errs)
	}
	id := volumes.NewIdentity(volumes.Selector{Cluster: "other.example", EtcdCluster: "main", Slot: "main-1"}, "", "/dev/x")
	if err := os.WriteFile(p, id.Marshal(), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := run(t, EtcdManager(), args...); code == 0 || !strings.Contains(errs, p) || !strings.Contains(errs, `cluster "other.example"`) {
		t.Fatalf("run on another cluster's volume: code %d, %q", code, errs)
	}
}
