package manager

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteFileSetAtomic: all files land with their modes; when one file of
// the set cannot be staged, none is replaced and no temp file stays.
func TestWriteFileSetAtomic(t *testing.T) {
	dir := t.TempDir()
	key, cert := filepath.Join(dir, "k.key"), filepath.Join(dir, "k.crt")
	if err := writeFileSetAtomic([]pendingFile{{key, []byte("key1"), 0o600}, {cert, []byte("cert1"), 0o644}}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{key: 0o600, cert: 0o644} {
		st, err := os.Stat(p)
		if err != nil || st.Mode().Perm() != want {
			t.Fatalf("%s: %v %v, want mode %o", p, st, err, want)
		}
	}
	// The second file's directory is a regular file: staging fails.
	blocker := filepath.Join(dir, "blocker")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(blocker, "k.crt")
	err := writeFileSetAtomic([]pendingFile{{key, []byte("key2"), 0o600}, {bad, []byte("cert2"), 0o644}})
	if err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("error %v does not name %s", err, bad)
	}
	if b, _ := os.ReadFile(key); string(b) != "key1" {
		t.Fatalf("key replaced although its certificate could not be written: %q", b)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "blocker,k.crt,k.key" {
		t.Fatalf("directory holds %v", names)
	}
}
