package backup_test

import (
	"bytes"
	"compress/gzip"
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
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/file"
	"github.com/kopsnode/agents/pkg/store/gcs"
	"github.com/kopsnode/agents/pkg/store/s3"
	"github.com/kopsnode/agents/pkg/testtools"
)

var layout = control.Layout{Cluster: "test.k8s.local", EtcdCluster: "main"}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func fileStore(t testing.TB) store.Store {
	st, err := file.New(filepath.Join(t.TempDir(), "store"), file.Options{CreateRoot: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func minioStore(t *testing.T) store.Store {
	m := testtools.StartMinIO(t, testtools.MinIOOptions{})
	m.CreateBucket(t, "state", false)
	st, err := s3.New(context.Background(), s3.Options{Bucket: "state", Prefix: "clusters", Endpoint: m.Endpoint, Region: m.Region,
		PathStyle: true, AccessKey: m.AccessKey, SecretKey: m.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func gcsStore(t *testing.T) store.Store {
	f := testtools.StartFakeGCS(t)
	f.CreateBucket(t, "state")
	st, err := gcs.New(context.Background(), gcs.Options{Bucket: "state", Prefix: "clusters", Endpoint: f.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// fill writes n keys of size bytes, deletes some, overwrites others and
// compacts, so the snapshot has history, tombstones and a compaction.
func fill(t *testing.T, c *clientv3.Client, n, size int) {
	ctx := ctxT(t)
	val := strings.Repeat("v", size)
	for i := 0; i < n; i++ {
		if _, err := c.Put(ctx, fmt.Sprintf("/registry/k%05d", i), val); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i += 7 {
		if _, err := c.Delete(ctx, fmt.Sprintf("/registry/k%05d", i)); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := c.Put(ctx, "/registry/k00001", "overwritten")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compact(ctx, resp.Header.Revision-3, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "/after-compaction", "x"); err != nil {
		t.Fatal(err)
	}
}

// live returns the cluster's revision and key count now.
func live(t *testing.T, c *clientv3.Client) (int64, int64) {
	resp, err := c.Get(ctxT(t), "\x00", clientv3.WithFromKey(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision, resp.Count
}

func take(t *testing.T, c *clientv3.Client, st store.Store, reason string) backup.Meta {
	t.Helper()
	m, err := backup.Take(ctxT(t), c, st, layout, backup.Options{
		Reason: reason, Spec: control.Spec{MemberCount: 1, EtcdVersion: "3.6.16"}, ClusterToken: "etcd-test",
		Member: "n1", Writer: backup.Writer{LeaderID: "m1", LeaderTerm: 7}, SpoolDir: t.TempDir(),
	})
	if err != nil {
		t.Fatalf("Take: %v", err)
	}
	return m
}

// checkBackup checks a backup against the live cluster: meta, stored
// object, and the snapshot inside it.
func checkBackup(t *testing.T, c *clientv3.Client, st store.Store, m backup.Meta) {
	t.Helper()
	rev, count := live(t, c)
	if m.Revision != rev || m.KeyCount != count {
		t.Fatalf("meta says revision %d, %d keys; the cluster has revision %d, %d keys", m.Revision, m.KeyCount, rev, count)
	}
	if m.CompactRevision == 0 || m.CompactRevision >= m.Revision {
		t.Fatalf("compact revision %d (revision %d)", m.CompactRevision, m.Revision)
	}
	if m.Writer != (backup.Writer{LeaderID: "m1", LeaderTerm: 7}) || m.Spec.MemberCount != 1 || m.Reason != "test" || m.ClusterToken != "etcd-test" {
		t.Fatalf("meta %+v", m)
	}
	if !m.Finished.After(m.Started) && !m.Finished.Equal(m.Started) {
		t.Fatalf("started %s, finished %s", m.Started, m.Finished)
	}
	sresp, err := c.Status(ctxT(t), c.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	if m.EtcdVersion != sresp.Version {
		t.Fatalf("meta etcd version %q, etcd says %q", m.EtcdVersion, sresp.Version)
	}
	// The meta carries the member's HashKV at the snapshot's revision.
	hresp, err := c.HashKV(ctxT(t), c.Endpoints()[0], m.Revision)
	if err != nil {
		t.Fatal(err)
	}
	if m.HashKV == nil || m.HashKV.Hash != hresp.Hash || m.HashKV.Revision != m.Revision || m.HashKV.CompactRevision != hresp.CompactRevision {
		t.Fatalf("meta HashKV %+v, etcd says hash %d at revision %d (compact revision %d)", m.HashKV, hresp.Hash, m.Revision, hresp.CompactRevision)
	}
	// The stored object is gzip of etcd's snapshot format, and its hash
	// and size are the meta's.
	raw, _, err := store.ReadAll(ctxT(t), st, backup.DataKey(layout, m.Name))
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(raw); hex.EncodeToString(sum[:]) != m.StoredSHA256 || int64(len(raw)) != m.StoredSize {
		t.Fatalf("stored object: sha256 %x, %d bytes; meta: %s, %d", sum, len(raw), m.StoredSHA256, m.StoredSize)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	db, trailer := snap[:len(snap)-32], snap[len(snap)-32:]
	if sum := sha256.Sum256(db); !bytes.Equal(sum[:], trailer) || hex.EncodeToString(sum[:]) != m.DBSHA256 || int64(len(db)) != m.DBSize {
		t.Fatalf("snapshot: db sha256 %x, trailer %x, meta %s; %d bytes, meta %d", sum, trailer, m.DBSHA256, len(db), m.DBSize)
	}
	if len(snap)%512 != 32 {
		t.Fatalf("snapshot of %d bytes: etcdutl would not find its hash (size %% 512 != 32)", len(snap))
	}

	// Read checks the hashes and gives the snapshot; its database is a
	// valid etcd database with the meta's revision and key count.
	dir := t.TempDir()
	got, err := backup.Read(ctxT(t), st, layout, m.Name, filepath.Join(dir, "snap.db"))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if got.StoredSHA256 != m.StoredSHA256 {
		t.Fatalf("Read returned meta %+v", got)
	}
	fromRead, err := os.ReadFile(filepath.Join(dir, "snap.db"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fromRead, snap) {
		t.Fatalf("Read gave %d bytes, the stored snapshot has %d", len(fromRead), len(snap))
	}
	if err := backup.ExtractDB(filepath.Join(dir, "snap.db"), filepath.Join(dir, "member", "snap", "db")); err != nil {
		t.Fatal(err)
	}
	ds, err := backup.Inspect(filepath.Join(dir, "member", "snap", "db"))
	if err != nil {
		t.Fatal(err)
	}
	if ds.Revision != rev || ds.KeyCount != count {
		t.Fatalf("the database read back has revision %d, %d keys; the cluster %d, %d", ds.Revision, ds.KeyCount, rev, count)
	}
}

// TestTakeEveryEtcdVersion takes a backup of each etcd version into a
// file store and checks it against the live cluster.
func TestTakeEveryEtcdVersion(t *testing.T) {
	for i, v := range etcdVersions {
		t.Run(v, func(t *testing.T) {
			c := startEtcd(t, v, fmt.Sprintf("127.44.60.%d", i+1))
			fill(t, c, 300, 100)
			st := fileStore(t)
			m := take(t, c, st, "test")
			checkBackup(t, c, st, m)
		})
	}
}

// TestTakeOnEveryStore takes, lists and reads backups on file://, s3://
// (MinIO) and gs:// (fake-gcs-server), with a snapshot of several MB so
// that the stream crosses the S3 part size and the GCS chunk size.
func TestTakeOnEveryStore(t *testing.T) {
	c := startEtcd(t, "3.6.16", "127.44.61.1")
	fill(t, c, 3000, 3000)
	for _, tc := range []struct {
		name string
		st   func(t *testing.T) store.Store
	}{{"file", func(t *testing.T) store.Store { return fileStore(t) }}, {"minio", minioStore}, {"gcs", gcsStore}} {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.st(t)
			first := take(t, c, st, "test")
			if first.DBSize < 8<<20 {
				t.Fatalf("database of %d bytes; the test wants several MB", first.DBSize)
			}
			checkBackup(t, c, st, first)
			time.Sleep(5 * time.Millisecond) // a distinct name (millisecond resolution)
			if _, err := c.Put(ctxT(t), "/second/"+tc.name, "x"); err != nil {
				t.Fatal(err)
			}
			second := take(t, c, st, "test")
			checkBackup(t, c, st, second)
			if second.Revision != first.Revision+1 || second.KeyCount != first.KeyCount+1 {
				t.Fatalf("second backup: revision %d, %d keys; first: %d, %d", second.Revision, second.KeyCount, first.Revision, first.KeyCount)
			}
			ls, err := backup.List(ctxT(t), st, layout)
			if err != nil {
				t.Fatal(err)
			}
			if len(ls.Backups) != 2 || ls.Backups[0].Name != second.Name || ls.Backups[1].Name != first.Name || len(ls.Incomplete)+len(ls.Invalid) != 0 {
				t.Fatalf("listing %+v; want %s then %s", ls, second.Name, first.Name)
			}
			testBadObjects(t, st, first)
		})
	}
}

// testBadObjects damages backups in st: a corrupted data object, a
// missing meta object, a meta that does not parse. Each is refused,
// naming the object, and nothing is deleted.
func testBadObjects(t *testing.T, st store.Store, m backup.Meta) {
	ctx := ctxT(t)
	// A corrupted data object: one byte changed in the middle.
	raw, _, err := store.ReadAll(ctx, st, m.Object)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), raw...)
	bad[len(bad)/2] ^= 0xff
	if _, err := st.Put(ctx, m.Object, bytes.NewReader(bad), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "snap.db")
	_, err = backup.Read(ctx, st, layout, m.Name, dst)
	url := store.JoinURL(st.URL(), m.Object)
	sum := sha256.Sum256(bad)
	if !errors.Is(err, backup.ErrIntegrity) || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), m.StoredSHA256) || !strings.Contains(err.Error(), hex.EncodeToString(sum[:])) {
		t.Fatalf("Read of a corrupted object: %v; want an integrity error naming %s, %s and %x", err, url, m.StoredSHA256, sum)
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Fatalf("Read left %s after refusing the object: %v", dst, err)
	}
	if _, _, err := store.ReadAll(ctx, st, m.Object); err != nil {
		t.Fatalf("the corrupted object was deleted: %v", err)
	}

	// A meta object that does not parse: listed as invalid, Read refuses.
	if _, err := st.Put(ctx, backup.MetaKey(layout, m.Name), strings.NewReader("{not json"), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	ls, err := backup.List(ctx, st, layout)
	if err != nil {
		t.Fatal(err)
	}
	metaURL := store.JoinURL(st.URL(), backup.MetaKey(layout, m.Name))
	if len(ls.Invalid) != 1 || ls.Invalid[0].Name != m.Name || !strings.Contains(ls.Invalid[0].Error, metaURL) || len(ls.Backups) != 1 {
		t.Fatalf("listing with a broken meta: %+v", ls)
	}
	if _, err := backup.Read(ctx, st, layout, m.Name, dst); err == nil || !strings.Contains(err.Error(), metaURL) {
		t.Fatalf("Read with a broken meta: %v", err)
	}

	// No meta object: incomplete, never used.
	if err := st.Delete(ctx, backup.MetaKey(layout, m.Name)); err != nil {
		t.Fatal(err)
	}
	ls, err = backup.List(ctx, st, layout)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls.Incomplete) != 1 || ls.Incomplete[0] != m.Name || len(ls.Backups) != 1 || ls.Backups[0].Name == m.Name {
		t.Fatalf("listing without meta: %+v", ls)
	}
	if _, err := backup.Read(ctx, st, layout, m.Name, dst); !errors.Is(err, backup.ErrNoBackup) || !strings.Contains(err.Error(), metaURL) {
		t.Fatalf("Read without meta: %v", err)
	}
	if _, err := backup.Read(ctx, st, layout, "2001-01-01T00-00-00.000Z-full", dst); !errors.Is(err, backup.ErrNoBackup) {
		t.Fatalf("Read of a backup that does not exist: %v", err)
	}
	if _, err := backup.Read(ctx, st, layout, "../x", dst); err == nil || !strings.Contains(err.Error(), `"../x"`) {
		t.Fatalf("Read of a malformed name: %v", err)
	}
}

// refusingStore refuses every write under the full backups' folder, as a
// bucket policy or a full disk would.
type refusingStore struct{ store.Store }

func (r refusingStore) Put(ctx context.Context, key string, rd io.Reader, cond store.Condition) (store.Info, error) {
	if strings.HasPrefix(key, backup.FullPrefix(layout)) {
		// Read a little first, as a real upload does.
		_, _ = io.CopyN(io.Discard, rd, 1<<16)
		return store.Info{}, &store.Error{Op: "put", URL: store.JoinURL(r.URL(), key), Err: store.ErrAccessDenied}
	}
	return r.Store.Put(ctx, key, rd, cond)
}

// TestTakeStoreRefuses: a store that refuses the write fails the backup
// with reason "store", names the URL, leaves nothing listed, and etcd
// keeps serving.
func TestTakeStoreRefuses(t *testing.T) {
	c := startEtcd(t, "3.6.16", "127.44.62.1")
	fill(t, c, 500, 2000)
	st := refusingStore{fileStore(t)}
	_, err := backup.Take(ctxT(t), c, st, layout, backup.Options{SpoolDir: t.TempDir()})
	if err == nil || backup.ReasonOf(err) != backup.ReasonStore || !strings.Contains(err.Error(), st.URL()) || !errors.Is(err, store.ErrAccessDenied) {
		t.Fatalf("Take into a refusing store: %v (reason %s)", err, backup.ReasonOf(err))
	}
	ls, err := backup.List(ctxT(t), st, layout)
	if err != nil || len(ls.Backups)+len(ls.Incomplete) != 0 {
		t.Fatalf("listing after a refused backup: %+v, %v", ls, err)
	}
	if _, err := c.Put(ctxT(t), "/still", "serving"); err != nil {
		t.Fatal(err)
	}
	// A cancelled context is reason "canceled", and leaves nothing.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = backup.Take(ctx, c, fileStore(t), layout, backup.Options{SpoolDir: t.TempDir()})
	if backup.ReasonOf(err) != backup.ReasonCanceled {
		t.Fatalf("Take with a cancelled context: %v (reason %s)", err, backup.ReasonOf(err))
	}
}

// TestTakeStreams: a backup of a database of about 80 MB never holds it in
// memory: the heap grows by less than half of it while Take runs.
func TestTakeStreams(t *testing.T) {
	c := startEtcd(t, "3.6.16", "127.44.67.1")
	load(t, c, 20000, 2000)
	st := fileStore(t)
	stop := heapPeak()
	m, err := backup.Take(ctxT(t), c, st, layout, backup.Options{SpoolDir: t.TempDir()})
	peak := stop()
	if err != nil {
		t.Fatal(err)
	}
	if m.DBSize < 60<<20 {
		t.Fatalf("database of %d bytes; the test wants about 80 MB", m.DBSize)
	}
	if peak > uint64(m.DBSize)/2 {
		t.Fatalf("heap grew by %d bytes during a backup of a %d-byte database", peak, m.DBSize)
	}
	t.Logf("database %d MiB, stored %d MiB, heap peak %d MiB", m.DBSize>>20, m.StoredSize>>20, peak>>20)
}

// corruptingProxy forwards TCP to target and, once, flips one byte of the
// server's stream inside a run of 'v's (a value's bytes in a snapshot
// chunk, never gRPC or HTTP/2 framing) after the first MB.
func corruptingProxy(t *testing.T, listen, target string) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	var flipped atomic.Bool
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(out, in); out.Close() }()
			go func() {
				defer wg.Done()
				defer in.Close()
				buf := make([]byte, 64<<10)
				var seen int64
				for {
					n, err := out.Read(buf)
					if n > 0 {
						if seen > 1<<20 && !flipped.Load() {
							if i := bytes.Index(buf[:n], bytes.Repeat([]byte("v"), 64)); i >= 0 {
								buf[i+32] = 'w'
								flipped.Store(true)
							}
						}
						seen += int64(n)
						if _, werr := in.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
}

// TestTakeRefusesCorruptSnapshot: a snapshot damaged on its way from etcd
// fails etcd's own hash check: reason "integrity", nothing stored.
func TestTakeRefusesCorruptSnapshot(t *testing.T) {
	c := startEtcd(t, "3.6.16", "127.44.68.1")
	fill(t, c, 1000, 3000)
	corruptingProxy(t, "127.44.68.1:12500", "127.44.68.1:12479")
	pc, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://127.44.68.1:12500"}, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	st := fileStore(t)
	_, err = backup.Take(ctxT(t), pc, st, layout, backup.Options{SpoolDir: t.TempDir()})
	if backup.ReasonOf(err) != backup.ReasonIntegrity || !errors.Is(err, backup.ErrIntegrity) || !strings.Contains(err.Error(), "etcd's snapshot hash") {
		t.Fatalf("Take of a damaged snapshot: %v (reason %s)", err, backup.ReasonOf(err))
	}
	infos, err := st.List(ctxT(t), backup.FullPrefix(layout))
	if err != nil || len(infos) != 0 {
		t.Fatalf("objects after a refused snapshot: %v, %v", infos, err)
	}
	// The same etcd, without the damage, backs up fine.
	take(t, c, st, "test")
}

// TestTakeSpoolFull: a spool folder without room (a 256 KB tmpfs) fails
// the backup with reason "local", naming the spool file, and stores
// nothing; a missing spool folder fails the same way. Needs root (mount).
func TestTakeSpoolFull(t *testing.T) {
	testtools.RequireRoot(t)
	c := startEtcd(t, "3.6.16", "127.44.69.1")
	fill(t, c, 1000, 3000)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=256k"); err != nil {
		t.Fatalf("mounting a small tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	st := fileStore(t)
	_, err := backup.Take(ctxT(t), c, st, layout, backup.Options{SpoolDir: dir})
	if backup.ReasonOf(err) != backup.ReasonLocal || !strings.Contains(err.Error(), "writing the spool file") || !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("Take with a full spool folder: %v (reason %s)", err, backup.ReasonOf(err))
	}
	_, err = backup.Take(ctxT(t), c, st, layout, backup.Options{SpoolDir: filepath.Join(dir, "missing")})
	if backup.ReasonOf(err) != backup.ReasonLocal || !strings.Contains(err.Error(), "spool file") {
		t.Fatalf("Take with a missing spool folder: %v (reason %s)", err, backup.ReasonOf(err))
	}
	infos, err := st.List(ctxT(t), backup.FullPrefix(layout))
	if err != nil || len(infos) != 0 {
		t.Fatalf("objects after failed backups: %v, %v", infos, err)
	}
}
