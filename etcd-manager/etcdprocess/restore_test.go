package etcdprocess

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kopsnode/agents/pkg/testtools"
)

var restoreVersions = []string{"3.5.21", "3.6.16", "3.7.3"}

// binRoot lays out <root>/v<version>/{etcd,etcdutl} as nodeup installs
// them, from the test tools.
func binRoot(t *testing.T, versions ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, v := range versions {
		dir := filepath.Join(root, "v"+v)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, src := range map[string]string{
			"etcd":    filepath.Join(testtools.EtcdBinDir(t, v), "etcd"),
			"etcdutl": testtools.EtcdutlBin(t, v),
		} {
			if err := os.Symlink(src, filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// member is a single etcd member's URLs on loopback.
type member struct {
	name, peer, client string
}

func newMember(t *testing.T, name string) member {
	return member{name: name, peer: fmt.Sprintf("http://127.0.0.1:%d", freePort(t)), client: fmt.Sprintf("http://127.0.0.1:%d", freePort(t))}
}

// startMember starts etcd of version for m on dataDir (state "new") and
// returns a client once it answers; both are stopped in cleanup.
func startMember(t *testing.T, root, version string, m member, dataDir, token string) *clientv3.Client {
	t.Helper()
	p, err := Start(Config{BinDirRoot: root, Version: version, Name: m.name, DataDir: dataDir,
		ListenPeerURLs: []string{m.peer}, AdvertisePeerURLs: []string{m.peer},
		ListenClientURLs: []string{m.client}, AdvertiseClientURLs: []string{m.client},
		InitialCluster: m.name + "=" + m.peer, InitialClusterState: "new", InitialClusterToken: token, LogLevel: "warn"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Stop(ctx)
	})
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{m.client}, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Get(ctx, "/ready")
		cancel()
		if err == nil {
			return c
		}
		if !p.Running() || time.Now().After(deadline) {
			t.Fatalf("etcd %s on %s did not answer (running %t): %v", version, m.client, p.Running(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// saveDB streams a snapshot and writes the plain database (without etcd's
// trailing sha256), as a backup stores it; it returns the db's sha256.
func saveDB(t *testing.T, c *clientv3.Client, path string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rc, err := c.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	db, trailer := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	sum := sha256.Sum256(db)
	if string(sum[:]) != string(trailer) {
		t.Fatal("snapshot stream does not end in the database's sha256")
	}
	if err := os.WriteFile(path, db, 0o600); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(sum[:])
}

// TestRestoreSnapshot: a snapshot restored with a bumped revision starts as
// a new cluster with the keys, the revision raised by the bump, and every
// older revision compacted; for each etcd version.
func TestRestoreSnapshot(t *testing.T) {
	for _, v := range restoreVersions {
		t.Run(v, func(t *testing.T) {
			root := binRoot(t, v)
			ctx := context.Background()
			src := startMember(t, root, v, newMember(t, "src"), filepath.Join(t.TempDir(), "data"), "old-token")
			for i := range 20 {
				if _, err := src.Put(ctx, fmt.Sprintf("/registry/k%02d", i), fmt.Sprintf("v%d", i)); err != nil {
					t.Fatal(err)
				}
			}
			resp, err := src.Get(ctx, "/registry/", clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			oldRev := resp.Header.Revision
			db := filepath.Join(t.TempDir(), "snapshot.db")
			sum := saveDB(t, src, db)

			m := newMember(t, "restored")
			dataDir := filepath.Join(t.TempDir(), "member", "data")
			const bump = 1_000_000
			err = RestoreSnapshot(ctx, RestoreConfig{BinDirRoot: root, Version: v, Snapshot: db, SnapshotSHA256: sum, DataDir: dataDir,
				Name: m.name, InitialCluster: m.name + "=" + m.peer, InitialClusterToken: "new-token",
				InitialAdvertisePeerURLs: []string{m.peer}, BumpRevision: bump, MarkCompacted: true})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(dataDir + ".restoring"); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the restore's temporary directory is left: %v", err)
			}
			c := startMember(t, root, v, m, dataDir, "new-token")
			got, err := c.Get(ctx, "/registry/", clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Kvs) != 20 || string(got.Kvs[7].Value) != "v7" {
				t.Fatalf("restored keys: %d, want 20 (%v)", len(got.Kvs), got.Kvs)
			}
			if got.Header.Revision != oldRev+bump {
				t.Errorf("restored revision %d, want %d + %d", got.Header.Revision, oldRev, bump)
			}
			if _, err := c.Get(ctx, "/registry/k01", clientv3.WithRev(oldRev)); !errors.Is(err, rpctypes.ErrCompacted) {
				t.Errorf("read at the old revision %d: %v, want compacted", oldRev, err)
			}
			// A new write continues above the bumped revision.
			put, err := c.Put(ctx, "/after", "x")
			if err != nil {
				t.Fatal(err)
			}
			if put.Header.Revision != oldRev+bump+1 {
				t.Errorf("write after restore at revision %d, want %d", put.Header.Revision, oldRev+bump+1)
			}
		})
	}
}

// TestRestoreSnapshotRefuses: bad input is refused with an error naming
// what is wrong, and leaves no data directory behind.
func TestRestoreSnapshotRefuses(t *testing.T) {
	const v = "3.6.16"
	root := binRoot(t, v)
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a bbolt database ", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	garbageSum := sha256.Sum256([]byte(strings.Repeat("not a bbolt database ", 100)))
	existing := filepath.Join(dir, "existing")
	if err := os.Mkdir(existing, 0o700); err != nil {
		t.Fatal(err)
	}
	good := func() RestoreConfig {
		return RestoreConfig{BinDirRoot: root, Version: v, Snapshot: garbage, DataDir: filepath.Join(dir, "new"),
			Name: "m1", InitialCluster: "m1=http://127.0.0.1:1", InitialClusterToken: "t",
			InitialAdvertisePeerURLs: []string{"http://127.0.0.1:1"}, BumpRevision: 10, MarkCompacted: true}
	}
	for name, c := range map[string]struct {
		edit func(*RestoreConfig)
		want []string
	}{
		"version not installed": {func(c *RestoreConfig) { c.Version = "3.9.9" },
			[]string{"etcdutl of etcd version 3.9.9 is not installed", filepath.Join(root, "v3.9.9", "etcdutl"), "a version the installed binaries do not cover", "3.6.16"}},
		"data dir exists":       {func(c *RestoreConfig) { c.DataDir = existing }, []string{"data dir " + existing + " exists"}},
		"bump without mark":     {func(c *RestoreConfig) { c.MarkCompacted = false }, []string{"markCompacted: false with bumpRevision 10"}},
		"mark without bump":     {func(c *RestoreConfig) { c.BumpRevision = 0 }, []string{"markCompacted: true with bumpRevision 0"}},
		"member not in cluster": {func(c *RestoreConfig) { c.Name = "m2" }, []string{`initialCluster: "m1=http://127.0.0.1:1" does not name member "m2"`}},
		"missing fields": {func(c *RestoreConfig) { c.Snapshot, c.InitialClusterToken, c.InitialAdvertisePeerURLs = "", "", nil },
			[]string{"snapshot: empty", "initialClusterToken: empty", "initialAdvertisePeerURLs: empty"}},
		"sha256 differs": {func(c *RestoreConfig) { c.SnapshotSHA256 = strings.Repeat("ab", 32) },
			[]string{"snapshot " + garbage + " has sha256 " + hex.EncodeToString(garbageSum[:]) + ", want " + strings.Repeat("ab", 32)}},
		"not a database": {func(*RestoreConfig) {}, []string{filepath.Join(root, "v3.6.16", "etcdutl") + " snapshot restore of " + garbage, "output:\n"}},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := good()
			c.edit(&cfg)
			err := RestoreSnapshot(context.Background(), cfg)
			if err == nil {
				t.Fatal("accepted")
			}
			t.Logf("error: %v", err)
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if cfg.DataDir != existing {
				if _, serr := os.Stat(cfg.DataDir); !errors.Is(serr, os.ErrNotExist) {
					t.Errorf("data dir %s left after a failed restore: %v", cfg.DataDir, serr)
				}
			}
			if _, serr := os.Stat(cfg.DataDir + ".restoring"); !errors.Is(serr, os.ErrNotExist) {
				t.Errorf("temporary dir left: %v", serr)
			}
		})
	}
}
