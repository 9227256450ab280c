package machine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

func TestMirrorFromHostSources(t *testing.T) {
	cases := []struct {
		name, deb822, oneLine, want string
	}{
		{
			name: "deb822 picks the main suite, not security",
			deb822: `Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`,
			want: "http://mirror.example/debian",
		},
		{
			name: "deb822 disabled stanza and deb-src are skipped",
			deb822: `Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
Enabled: no
URIs: http://off.example/debian
Suites: bookworm
Components: main
`,
			want: "",
		},
		{
			name:    "one-line with options",
			oneLine: "# deb http://old.example/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n",
			want:    "http://mirror.example/debian",
		},
		{
			name:    "one-line other suite",
			oneLine: "deb http://mirror.example/debian trixie main\n",
			want:    "",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got string
			if c.deb822 != "" {
				got = mirrorFromDeb822(c.deb822, "bookworm")
			} else {
				got = mirrorFromOneLine(c.oneLine, "bookworm")
			}
			if got != c.want {
				t.Errorf("mirror = %q, want %q", got, c.want)
			}
		})
	}
}

// TestBaseTreeCacheBuildsOnceUnderConcurrency runs several builders at
// once, as parallel test binaries do: exactly one builds, all get the
// finished tree, and no temporary directory is left behind.
func TestBaseTreeCacheBuildsOnceUnderConcurrency(t *testing.T) {
	cache := t.TempDir()
	var builds atomic.Int32
	build := func(ctx context.Context, dir string, logf func(string, ...any)) error {
		builds.Add(1)
		return os.WriteFile(filepath.Join(dir, "marker"), []byte("built"), 0o644)
	}
	var wg sync.WaitGroup
	results := make([]string, 6)
	errs := make([]error, 6)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = ensureBaseTree(context.Background(), cache, "k1", build, t.Logf)
		}()
	}
	wg.Wait()
	for i := range results {
		if errs[i] != nil {
			t.Fatalf("builder %d: %v", i, errs[i])
		}
		if results[i] != filepath.Join(cache, "k1") {
			t.Errorf("builder %d got %s", i, results[i])
		}
	}
	if n := builds.Load(); n != 1 {
		t.Errorf("tree built %d times, want 1", n)
	}
	if b, err := os.ReadFile(filepath.Join(cache, "k1", "marker")); err != nil || string(b) != "built" {
		t.Errorf("marker in cached tree: %q, %v", b, err)
	}
	if m, _ := filepath.Glob(filepath.Join(cache, ".tmp-*")); len(m) != 0 {
		t.Errorf("temporary build directories left: %v", m)
	}
}

// TestBaseTreeCacheRecoversFromFailedBuild checks that a failed build
// leaves nothing that a later run would take for a finished tree, and that
// a tree without its stamp (a builder died after the rename) is rebuilt.
func TestBaseTreeCacheRecoversFromFailedBuild(t *testing.T) {
	cache := t.TempDir()
	failing := func(ctx context.Context, dir string, logf func(string, ...any)) error {
		os.WriteFile(filepath.Join(dir, "half"), nil, 0o644)
		return fmt.Errorf("mirror unreachable")
	}
	if _, err := ensureBaseTree(context.Background(), cache, "k2", failing, t.Logf); err == nil {
		t.Fatal("failed build reported success")
	}
	if _, err := os.Stat(filepath.Join(cache, "k2")); !os.IsNotExist(err) {
		t.Errorf("failed build left the tree: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(cache, ".tmp-*")); len(m) != 0 {
		t.Errorf("failed build left temporary directories: %v", m)
	}
	// A tree without a stamp.
	os.MkdirAll(filepath.Join(cache, "k2", "stale"), 0o755)
	var builds int
	good := func(ctx context.Context, dir string, logf func(string, ...any)) error {
		builds++
		return nil
	}
	dir, err := ensureBaseTree(context.Background(), cache, "k2", good, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if builds != 1 {
		t.Errorf("unstamped tree was reused (builds = %d)", builds)
	}
	if _, err := os.Stat(filepath.Join(dir, "stale")); !os.IsNotExist(err) {
		t.Errorf("stale content survived the rebuild")
	}
	if _, err := os.Stat(filepath.Join(cache, "k2.stamp")); err != nil {
		t.Errorf("no stamp after build: %v", err)
	}
}
