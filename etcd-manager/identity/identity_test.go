package identity

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadOrCreateIsStable(t *testing.T) {
	dir := t.TempDir()
	s, err := LoadOrCreate(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateID(s.ID); err != nil {
		t.Fatalf("generated id: %v", err)
	}
	s2, err := LoadOrCreate(dir, "")
	if err != nil || s2.ID != s.ID {
		t.Fatalf("second load = %+v, %v; want id %s", s2, err, s.ID)
	}
	if _, err := LoadOrCreate(dir, "other"); err == nil || !strings.Contains(err.Error(), "belongs to instance") {
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
