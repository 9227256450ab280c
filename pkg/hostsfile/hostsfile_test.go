package hostsfile

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const userContent = "127.0.0.1\tlocalhost\n# my own comment\n10.9.9.9 mine.example\n"

var gossip = Block{Begin: "# Begin host entries managed by kopsnode gossip - do not edit", End: "# End host entries managed by kopsnode gossip"}

func entries() []Entry {
	return ByName(map[string][]netip.Addr{
		"api.internal.c.k8s.local.":   {netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")},
		"Node-A.internal.c.k8s.local": {netip.MustParseAddr("10.0.0.1")},
	})
}

func TestRender(t *testing.T) {
	block := gossip.Begin + "\n10.0.0.1\tapi.internal.c.k8s.local node-a.internal.c.k8s.local\n10.0.0.2\tapi.internal.c.k8s.local\n" + gossip.End + "\n"
	etcd := Named("etcd-manager main")
	etcdBlock := "# Begin etcd-manager main (managed; do not edit)\n10.0.0.5\tetcd-a.internal.c\n# End etcd-manager main\n"
	for _, c := range []struct {
		name     string
		existing string
		entries  []Entry
		want     string
	}{
		{"append to a file without a block", userContent, entries(), userContent + block},
		{"replace a block in place", "a\n" + gossip.Begin + "\n1.2.3.4 old\n" + gossip.End + "\nb\n", entries(), "a\n" + block + "b\n"},
		{"no trailing newline", strings.TrimSuffix(userContent, "\n"), entries(), userContent + block},
		{"remove the block", userContent + gossip.Begin + "\n1.2.3.4 old\n" + gossip.End + "\nafter\n", nil, userContent + "after\n"},
		{"remove an absent block: unchanged", "x y", nil, "x y"},
		{"merge duplicate blocks", userContent + gossip.Begin + "\nx\n" + gossip.End + "\nmiddle\n" + gossip.Begin + "\ny\n" + gossip.End + "\n", entries(), userContent + block + "middle\n"},
		{"empty file", "", entries(), block},
		{"other lines byte for byte (CRLF, tabs, blanks)", "a\r\n\n\t  b  \t\n" + gossip.Begin + "\r\nold\r\n" + gossip.End + "\r\nc\r\n", entries(), "a\r\n\n\t  b  \t\n" + block + "c\r\n"},
		{"another owner's block untouched", userContent + etcdBlock, entries(), userContent + etcdBlock + block},
		{"a block with end marker only is just a line", "# End host entries managed by kopsnode gossip\n", entries(), "# End host entries managed by kopsnode gossip\n" + block},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Render([]byte(c.existing), gossip, c.entries)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != c.want {
				t.Fatalf("got:\n%q\nwant:\n%q", got, c.want)
			}
		})
	}
	got, err := Render([]byte(userContent+etcdBlock), etcd, nil)
	if err != nil || string(got) != userContent {
		t.Errorf("removing the etcd block: %q, %v", got, err)
	}
	_, err = Render([]byte("x\n"+gossip.Begin+"\n1.2.3.4 x\n"), gossip, entries())
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("a block without an end marker: %v", err)
	}
}

func TestValidate(t *testing.T) {
	err := ValidateEntries([]Entry{
		{Addr: netip.MustParseAddr("10.0.0.1"), Names: []string{"ok", "a b"}},
		{Names: []string{"x"}},
		{Addr: netip.MustParseAddr("10.0.0.2"), Names: []string{"#x", ""}},
		{Addr: netip.MustParseAddr("10.0.0.3")},
	})
	for _, want := range []string{"entries[0].names[1]", "entries[1].addr", "entries[2].names[0]", "entries[2].names[1]", "entries[3].names: empty"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidateEntries: %v, want %s", err, want)
		}
	}
	if err := (Block{Begin: "no comment", End: "no comment"}).Validate(); err == nil || !strings.Contains(err.Error(), "begin marker") || !strings.Contains(err.Error(), "the same") {
		t.Errorf("Block.Validate: %v", err)
	}
	if err := Named("etcd-manager main").Validate(); err != nil {
		t.Error(err)
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
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(p, []byte(userContent), 0o640)
	ino := inode(t, p)
	fsys := &faultFS{}
	h := Hosts{FS: fsys, Path: p}
	changed, err := h.Update(ctx, gossip, entries())
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
	if _, err := os.Stat(LockPath(p)); err != nil {
		t.Fatalf("no lock file beside the hosts file: %v", err)
	}
	changed, err = h.Update(ctx, gossip, entries())
	if err != nil || changed || fsys.renames != 1 {
		t.Fatalf("second Update = %v, %v with %d renames; want no write", changed, err, fsys.renames)
	}
	// Removing the block gives back the original bytes.
	if changed, err := h.Update(ctx, gossip, nil); err != nil || !changed {
		t.Fatalf("removing: %v, %v", changed, err)
	}
	if got, _ := os.ReadFile(p); string(got) != userContent {
		t.Fatalf("after removing the block:\n%q", got)
	}
	assertNoTemps(t, p)
}

func TestUpdateCreatesAMissingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hosts")
	if _, err := (Hosts{Path: p}).Update(context.Background(), gossip, entries()); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("created file: %v %v", fi, err)
	}
}

func TestUpdateBindMountedFallsBackToInPlace(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EBUSY, syscall.EXDEV} {
		t.Run(errno.Error(), func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "hosts")
			os.WriteFile(p, []byte(userContent+gossip.Begin+"\n1.2.3.4 old-and-much-longer-name-than-anything-new\n"+gossip.End+"\n"), 0o644)
			ino := inode(t, p)
			h := Hosts{FS: &faultFS{renameErr: errno}, Path: p}
			if _, err := h.Update(context.Background(), gossip, entries()[:1]); err != nil {
				t.Fatal(err)
			}
			if inode(t, p) != ino {
				t.Fatal("the bind-mounted file was replaced instead of rewritten in place")
			}
			got, _ := os.ReadFile(p)
			want := userContent + gossip.Begin + "\n10.0.0.1\tapi.internal.c.k8s.local node-a.internal.c.k8s.local\n" + gossip.End + "\n"
			if string(got) != want {
				t.Fatalf("content:\n%q\nwant:\n%q", got, want)
			}
			assertNoTemps(t, p)
		})
	}
}

func TestUpdateOtherRenameErrorIsReported(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(p, []byte(userContent), 0o644)
	_, err := Hosts{FS: &faultFS{renameErr: syscall.EACCES}, Path: p}.Update(context.Background(), gossip, entries())
	if !errors.Is(err, syscall.EACCES) || !strings.Contains(err.Error(), p) {
		t.Fatalf("err = %v, want EACCES naming %s", err, p)
	}
	if got, _ := os.ReadFile(p); string(got) != userContent {
		t.Fatal("file changed although the write failed")
	}
	assertNoTemps(t, p)
}

// A file this package cannot parse (a begin marker without its end) is
// kept as it is, and the error names the file and the line.
func TestUpdateMalformedFileKept(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hosts")
	broken := userContent + gossip.Begin + "\n10.0.0.1 x\n"
	os.WriteFile(p, []byte(broken), 0o644)
	_, err := Hosts{Path: p}.Update(context.Background(), gossip, entries())
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "line 4") || !strings.Contains(err.Error(), "left as it is") {
		t.Fatalf("Update of a block without end: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != broken {
		t.Fatalf("the malformed file was changed: %q", b)
	}
	// Another owner's block is still updated: the damage is not its.
	if _, err := (Hosts{Path: p}).Update(context.Background(), Named("etcd-manager main"), entries()); err != nil {
		t.Fatalf("another block in a file with a broken gossip block: %v", err)
	}
	if b, _ := os.ReadFile(p); !strings.HasPrefix(string(b), broken) {
		t.Fatalf("the broken lines were not kept byte for byte: %q", b)
	}
	if _, err := (Hosts{Path: p}).Update(context.Background(), gossip, []Entry{{Names: []string{"a b"}}}); err == nil || !strings.Contains(err.Error(), "entries[0]") {
		t.Fatalf("invalid entries: %v", err)
	}
}

// Temporary files left by a writer killed mid-update are removed by the
// next update.
func TestUpdateRemovesStaleTemps(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(p, []byte(userContent), 0o644)
	stale := filepath.Join(filepath.Dir(p), ".hosts.kopsnode-123456")
	os.WriteFile(stale, []byte("half"), 0o644)
	if _, err := (Hosts{Path: p}).Update(context.Background(), gossip, nil); err != nil {
		t.Fatal(err)
	}
	assertNoTemps(t, p)
}

// While another process (here: another open file) holds the lock, Update
// waits, and gives up with ctx, naming the lock file.
func TestUpdateWaitsForTheLock(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(p, []byte(userContent), 0o644)
	f, err := os.OpenFile(LockPath(p), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = Hosts{Path: p}.Update(ctx, gossip, entries())
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), LockPath(p)) {
		t.Fatalf("Update while locked: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != userContent {
		t.Fatal("written without the lock")
	}
	done := make(chan error, 1)
	go func() {
		_, err := Hosts{Path: p}.Update(context.Background(), gossip, entries())
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Update returned while the lock was held: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Update did not proceed after the lock was released")
	}
}

// writerBlock and writerEntries are what writer w writes in round i.
func writerBlock(w string) Block { return Named("writer " + w) }

func writerEntries(w string, i int) []Entry {
	return []Entry{{Addr: netip.AddrFrom4([4]byte{10, 0, byte(i / 256), byte(i % 256)}), Names: []string{fmt.Sprintf("%s-round-%d", w, i)}}}
}

// roundOf returns the round of writer w's block in the file (-1: absent).
func roundOf(content []byte, w string) (int, error) {
	b := writerBlock(w)
	lines := strings.Split(string(content), "\n")
	for i, l := range lines {
		if l == b.Begin && i+1 < len(lines) {
			f := strings.Fields(lines[i+1])
			if len(f) != 2 {
				return 0, fmt.Errorf("block of %s: line %q", w, lines[i+1])
			}
			_, r, _ := strings.Cut(f[1], "-round-")
			return strconv.Atoi(r)
		}
	}
	return -1, nil
}

// runWriter updates writer w's block rounds times; before each update it
// checks that its block still holds the previous round, which a writer
// that read the file before the last update and wrote after it would have
// undone.
func runWriter(ctx context.Context, path, w string, rounds int) error {
	h := Hosts{Path: path}
	for i := range rounds {
		content, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		got, err := roundOf(content, w)
		if err != nil {
			return err
		}
		if got != i-1 {
			return fmt.Errorf("writer %s before round %d finds its block at round %d: an update was lost", w, i, got)
		}
		if _, err := h.Update(ctx, writerBlock(w), writerEntries(w, i)); err != nil {
			return err
		}
	}
	return nil
}

func checkFinal(t *testing.T, path string, writers []string, rounds int) {
	t.Helper()
	content, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(content), userContent) {
		t.Fatalf("the lines outside the blocks changed:\n%s", content)
	}
	for _, w := range writers {
		if r, err := roundOf(content, w); err != nil || r != rounds-1 {
			t.Errorf("writer %s's block at round %d (%v), want %d", w, r, err, rounds-1)
		}
	}
	assertNoTemps(t, path)
}

// Writers in one process, each update with its own open of the lock file,
// lose nothing.
func TestConcurrentWritersInOneProcess(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(p, []byte(userContent), 0o644)
	writers := []string{"a", "b", "c", "d"}
	const rounds = 60
	var wg sync.WaitGroup
	errs := make([]error, len(writers))
	for i, w := range writers {
		wg.Go(func() { errs[i] = runWriter(context.Background(), p, w, rounds) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	checkFinal(t, p, writers, rounds)
}

const writerEnv = "HOSTSFILE_TEST_WRITER"

// TestMain lets the test binary act as a writer process: with writerEnv
// set to "path,name,rounds" it runs one writer and exits.
func TestMain(m *testing.M) {
	if spec := os.Getenv(writerEnv); spec != "" {
		parts := strings.Split(spec, ",")
		rounds, _ := strconv.Atoi(parts[2])
		if err := runWriter(context.Background(), parts[0], parts[1], rounds); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Writers in separate processes (as gossip and the etcd-managers are) lose
// nothing.
func TestConcurrentWriterProcesses(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(p, []byte(userContent), 0o644)
	writers := []string{"gossip", "etcd-main", "etcd-events"}
	const rounds = 60
	var wg sync.WaitGroup
	outs := make([][]byte, len(writers))
	errs := make([]error, len(writers))
	for i, w := range writers {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%s,%d", writerEnv, p, w, rounds))
		wg.Go(func() { outs[i], errs[i] = cmd.CombinedOutput() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("writer process %s: %v: %s", writers[i], err, outs[i])
		}
	}
	checkFinal(t, p, writers, rounds)
}

func inode(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func assertNoTemps(t *testing.T, hostsPath string) {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Dir(hostsPath))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tempPrefix(hostsPath)) {
			t.Fatalf("temporary file %s left behind", e.Name())
		}
	}
}

// FuzzRender: any file content either fails cleanly or renders to a file
// that renders to itself again (idempotent), keeps every line outside the
// block, and holds the block exactly once.
func FuzzRender(f *testing.F) {
	f.Add("127.0.0.1 localhost\n")
	f.Add("# Begin o (managed; do not edit)\n1.2.3.4 a\n# End o\nx y\n")
	f.Add("no newline at end")
	f.Add("# Begin o (managed; do not edit)\n")
	f.Add("a\r\n# Begin o (managed; do not edit)\r\n# End o\r\n")
	b := Named("o")
	f.Fuzz(func(t *testing.T, content string) {
		es := []Entry{{Addr: netip.MustParseAddr("10.0.0.1"), Names: []string{"etcd-a.internal.c"}}}
		out, err := Render([]byte(content), b, es)
		if err != nil {
			return
		}
		again, err := Render(out, b, es)
		if err != nil || string(again) != string(out) {
			t.Fatalf("not idempotent: %q -> %q -> %q (%v)", content, out, again, err)
		}
		n := 0
		for _, l := range strings.Split(string(out), "\n") {
			if strings.TrimRight(l, "\r") == b.Begin {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d blocks in %q", n, out)
		}
		inBlock := false
		for _, l := range strings.Split(content, "\n") {
			switch {
			case strings.TrimRight(l, "\r") == b.Begin:
				inBlock = true
			case inBlock && strings.TrimRight(l, "\r") == b.End:
				inBlock = false
			case !inBlock && l != "":
				if !strings.Contains(string(out), l) {
					t.Fatalf("line %q lost: %q -> %q", l, content, out)
				}
			}
		}
		removed, err := Render(out, b, nil)
		if err != nil {
			t.Fatalf("removal: %v", err)
		}
		for _, l := range strings.Split(string(removed), "\n") {
			if strings.TrimRight(l, "\r") == b.Begin {
				t.Fatalf("removal left the block: %q", removed)
			}
		}
	})
}
