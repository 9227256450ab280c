package fsroot

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteFileIsAtomicAndLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	f, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.WriteFile("/etc/x.conf", []byte("old\n"), 0o640, Owner{0, 0}); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(filepath.Join(dir, "etc/x.conf"))
	if fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v", fi.Mode())
	}
	// A refused rename (a bind-mounted file, a full disk) leaves the old
	// content and no temporary file.
	bad := f.WithHooks(Hooks{BeforeRename: func(tmp, target string) error {
		b, _ := os.ReadFile(tmp)
		if string(b) != "new\n" {
			t.Errorf("temp content %q", b)
		}
		st, _ := os.Stat(tmp)
		if st.Mode().Perm() != 0o600 {
			t.Errorf("mode not applied before rename: %v", st.Mode())
		}
		return errors.New("device or resource busy")
	}})
	err = bad.WriteFile("/etc/x.conf", []byte("new\n"), 0o600, Owner{0, 0})
	if err == nil || !strings.Contains(err.Error(), "/etc/x.conf") {
		t.Fatalf("err = %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "etc/x.conf"))
	if string(b) != "old\n" {
		t.Fatalf("content %q", b)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "etc"))
	if len(ents) != 1 {
		t.Fatalf("left behind: %v", ents)
	}
}

func TestPathStaysInsideRoot(t *testing.T) {
	dir := t.TempDir()
	f, _ := New(dir)
	p, err := f.Path("/../../etc/passwd")
	if err != nil || p != filepath.Join(dir, "etc/passwd") {
		t.Fatalf("path = %q, %v", p, err)
	}
	if _, err := f.Path("relative"); err == nil {
		t.Fatal("relative path accepted")
	}
	live, _ := New("/")
	if !live.IsLive() || f.IsLive() {
		t.Fatal("IsLive wrong")
	}
}

func TestSymlinkReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	f, _ := New(dir)
	if err := f.Symlink("/a", "/x/link"); err != nil {
		t.Fatal(err)
	}
	if err := f.Symlink("/b", "/x/link"); err != nil {
		t.Fatal(err)
	}
	if l, _ := f.Readlink("/x/link"); l != "/b" {
		t.Fatalf("link -> %q", l)
	}
}
