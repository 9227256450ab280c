package hosts

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

const userContent = "127.0.0.1\tlocalhost\n# my own comment\n10.9.9.9 mine.example\n"

func entries() []Entry {
	return ByName(map[string][]netip.Addr{
		"api.internal.c.k8s.local.":   {netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")},
		"node-a.internal.c.k8s.local": {netip.MustParseAddr("10.0.0.1")},
	})
}

func TestRender(t *testing.T) {
	want := userContent + BeginMarker + "\n10.0.0.1\tapi.internal.c.k8s.local node-a.internal.c.k8s.local\n10.0.0.2\tapi.internal.c.k8s.local\n" + EndMarker + "\n"
	cases := []struct {
		name     string
		existing string
		entries  []Entry
		want     string
	}{
		{"append to a file without a block", userContent, entries(), want},
		{"replace an existing block", userContent + BeginMarker + "\n1.2.3.4 old\n" + EndMarker + "\n", entries(), want},
		{"keep content after the block", BeginMarker + "\n1.2.3.4 old\n" + EndMarker + "\n" + userContent, entries(),
			strings.TrimPrefix(want, userContent) + userContent},
		{"no trailing newline", strings.TrimSuffix(userContent, "\n"), entries(), want},
		{"remove the block when empty", userContent + BeginMarker + "\n1.2.3.4 old\n" + EndMarker + "\n", nil, userContent},
		{"merge duplicate blocks", userContent + BeginMarker + "\nx\n" + EndMarker + "\nmiddle\n" + BeginMarker + "\ny\n" + EndMarker + "\n", entries(),
			userContent + strings.TrimPrefix(want, userContent) + "middle\n"},
		{"empty file", "", entries(), strings.TrimPrefix(want, userContent)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Render([]byte(c.existing), c.entries)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != c.want {
				t.Fatalf("got:\n%s\nwant:\n%s", got, c.want)
			}
		})
	}
	if _, err := Render([]byte(userContent+BeginMarker+"\n1.2.3.4 x\n"), entries()); err == nil {
		t.Fatal("a block without an end marker was accepted")
	}
}

// faultFS refuses renames with a chosen error, as the kernel does when the
// target is a bind mount.
type faultFS struct {
	OS
	renameErr error
	renames   int
}

func (f *faultFS) Rename(o, n string) error {
	f.renames++
	if f.renameErr != nil {
		return &os.LinkError{Op: "rename", Old: o, New: n, Err: f.renameErr}
	}
	return os.Rename(o, n)
}

func TestUpdateAtomicRename(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(p, []byte(userContent), 0o640)
	ino := inode(t, p)
	fsys := &faultFS{}
	w := Writer{FS: fsys, Path: p}
	changed, err := w.Update(entries())
	if err != nil || !changed {
		t.Fatalf("Update = %v, %v", changed, err)
	}
	if inode(t, p) == ino {
		t.Fatal("file was not replaced by rename")
	}
	got, _ := os.ReadFile(p)
	if !strings.HasPrefix(string(got), userContent) || !strings.Contains(string(got), "10.0.0.2\tapi.internal.c.k8s.local") {
		t.Fatalf("content:\n%s", got)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, want 0640 kept", fi.Mode().Perm())
	}
	changed, err = w.Update(entries())
	if err != nil || changed || fsys.renames != 1 {
		t.Fatalf("second Update = %v, %v with %d renames; want no write", changed, err, fsys.renames)
	}
	assertNoTemps(t, filepath.Dir(p))
}

func TestUpdateBindMountedFallsBackToInPlace(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EBUSY, syscall.EXDEV} {
		t.Run(errno.Error(), func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "hosts")
			os.WriteFile(p, []byte(userContent+BeginMarker+"\n1.2.3.4 old-and-much-longer-name-than-anything-new\n"+EndMarker+"\n"), 0o644)
			ino := inode(t, p)
			w := Writer{FS: &faultFS{renameErr: errno}, Path: p}
			if _, err := w.Update(entries()[:1]); err != nil {
				t.Fatal(err)
			}
			if inode(t, p) != ino {
				t.Fatal("the bind-mounted file was replaced instead of rewritten in place")
			}
			got, _ := os.ReadFile(p)
			want := userContent + BeginMarker + "\n10.0.0.1\tapi.internal.c.k8s.local node-a.internal.c.k8s.local\n" + EndMarker + "\n"
			if string(got) != want {
				t.Fatalf("content:\n%q\nwant:\n%q", got, want)
			}
			assertNoTemps(t, filepath.Dir(p))
		})
	}
}

func TestUpdateOtherRenameErrorIsReported(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(p, []byte(userContent), 0o644)
	w := Writer{FS: &faultFS{renameErr: syscall.EACCES}, Path: p}
	_, err := w.Update(entries())
	if !errors.Is(err, syscall.EACCES) || !strings.Contains(err.Error(), p) {
		t.Fatalf("err = %v, want EACCES naming %s", err, p)
	}
	if got, _ := os.ReadFile(p); string(got) != userContent {
		t.Fatal("file changed although the write failed")
	}
	assertNoTemps(t, filepath.Dir(p))
}

func inode(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func assertNoTemps(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Fatalf("temporary file %s left behind", e.Name())
		}
	}
}

var _ FS = OS{}
