package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kopsnode/agents/nodeup/fsroot"
)

func TestStateRoundTripAndCorruptFile(t *testing.T) {
	dir := t.TempDir()
	f, _ := fsroot.New(dir)
	s, err := Load(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetUnit("kubelet.service", UnitRecord{Inputs: map[string]string{"/a": "h"}}); err != nil {
		t.Fatal(err)
	}
	s2, err := Load(f)
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := s2.Unit("kubelet.service"); !ok || r.Inputs["/a"] != "h" {
		t.Fatalf("record %+v", r)
	}
	os.WriteFile(filepath.Join(dir, Path), []byte("{not json"), 0o600)
	s3, err := Load(f)
	if err == nil || !strings.Contains(err.Error(), Path) {
		t.Fatalf("err = %v", err)
	}
	if _, ok := s3.Unit("kubelet.service"); ok || s3 == nil {
		t.Fatal("corrupt state not replaced by an empty one")
	}
}

func TestHashCacheFollowsChanges(t *testing.T) {
	dir := t.TempDir()
	f, _ := fsroot.New(dir)
	s, _ := Load(f)
	big := make([]byte, 100<<10)
	if err := f.WriteFile("/bin/x", big, 0o755, fsroot.RootOwner); err != nil {
		t.Fatal(err)
	}
	h1, err := s.HashFile("/bin/x")
	if err != nil || h1 != fsroot.HashBytes(big) {
		t.Fatal(h1, err)
	}
	if _, ok := s.d.Hashes["/bin/x"]; !ok {
		t.Fatal("large file hash not cached")
	}
	big[0] = 1
	if err := f.WriteFile("/bin/x", big, 0o755, fsroot.RootOwner); err != nil {
		t.Fatal(err)
	}
	h2, _ := s.HashFile("/bin/x")
	if h2 != fsroot.HashBytes(big) || h2 == h1 {
		t.Fatal("stale cached hash after rewrite")
	}
}
