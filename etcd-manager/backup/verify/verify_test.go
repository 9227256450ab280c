package verify_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/backup/backuptest"
	"github.com/kopsnode/agents/etcd-manager/backup/verify"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/etcdprocess"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/file"
	"github.com/kopsnode/agents/pkg/testtools"
)

var layout = control.Layout{Cluster: "test.k8s.local", EtcdCluster: "main"}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// binRoot lays out <root>/v<version>/{etcd,etcdutl} as nodeup installs them.
func binRoot(t *testing.T, versions ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, v := range versions {
		dir := filepath.Join(root, "v"+v)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(testtools.EtcdBinDir(t, v), "etcd"), filepath.Join(dir, "etcd")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(testtools.EtcdutlBin(t, v), filepath.Join(dir, "etcdutl")); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// startEtcd runs a single real etcd member on ip (plain HTTP on loopback)
// and returns a client; stopped in cleanup.
func startEtcd(t *testing.T, root, version, ip string) *clientv3.Client {
	t.Helper()
	client, peer := "http://"+ip+":12579", "http://"+ip+":12580"
	p, err := etcdprocess.Start(etcdprocess.Config{BinDirRoot: root, Version: version, Name: "live", DataDir: filepath.Join(t.TempDir(), "data"),
		ListenPeerURLs: []string{peer}, AdvertisePeerURLs: []string{peer}, ListenClientURLs: []string{client}, AdvertiseClientURLs: []string{client},
		InitialCluster: "live=" + peer, InitialClusterState: "new", InitialClusterToken: "live", LogLevel: "warn"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Stop(ctx)
	})
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Put(ctx, "/ready", "1")
		cancel()
		if err == nil {
			return c
		}
		if !p.Running() || time.Now().After(deadline) {
			t.Fatalf("etcd %s on %s did not answer: %v", version, client, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func fileStore(t *testing.T) store.Store {
	st, err := file.New(filepath.Join(t.TempDir(), "store"), file.Options{CreateRoot: true})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// fill writes n keys, some deleted and overwritten, and compacts once, so
// the backup has history and a compaction point.
func fill(t *testing.T, c *clientv3.Client, n int) {
	t.Helper()
	for i := range n {
		if _, err := c.Put(ctxT(t), fmt.Sprintf("/registry/pods/p%04d", i), strings.Repeat("x", 100+i%50)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i += 10 {
		if _, err := c.Delete(ctxT(t), fmt.Sprintf("/registry/pods/p%04d", i)); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := c.Put(ctxT(t), "/registry/pods/p0001", "overwritten")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compact(ctxT(t), resp.Header.Revision-5); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := c.Put(ctxT(t), fmt.Sprintf("/registry/events/e%d", i), "e"); err != nil {
			t.Fatal(err)
		}
	}
}

func take(t *testing.T, c *clientv3.Client, st store.Store) backup.Meta {
	t.Helper()
	m, err := backup.Take(ctxT(t), c, st, layout, backup.Options{Reason: "test", Spec: control.Spec{MemberCount: 1, EtcdVersion: "3.6.16"},
		ClusterToken: "live", Member: "live", Writer: backup.Writer{LeaderID: "m1", LeaderTerm: 1}, SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatalf("Take: %v", err)
	}
	if m.HashKV == nil {
		t.Fatal("the meta has no HashKV")
	}
	return m
}

// TestVerifyGood: a backup of each etcd version verifies; the result
// names the revision, key count and hash it compared.
func TestVerifyGood(t *testing.T) {
	for i, v := range []string{"3.5.21", "3.6.16", "3.7.3"} {
		t.Run(v, func(t *testing.T) {
			root := binRoot(t, v)
			c := startEtcd(t, root, v, fmt.Sprintf("127.45.70.%d", i+1))
			fill(t, c, 200)
			st := fileStore(t)
			m := take(t, c, st)
			res, err := verify.Newest(ctxT(t), st, layout, verify.Options{BinDirRoot: root, WorkDir: t.TempDir(), Trigger: "test"})
			if err != nil {
				t.Fatalf("Newest: %v\n%+v", err, res)
			}
			if !res.OK || res.Backup != m.Name || res.Revision != m.Revision || res.KeyCount != m.KeyCount || res.HashKV != m.HashKV.Hash || len(res.Differences) != 0 {
				t.Fatalf("result %+v for meta rev %d keys %d hash %d", res, m.Revision, m.KeyCount, m.HashKV.Hash)
			}
			if res.EtcdVersion != v {
				t.Errorf("ran etcd %s, want the backup's %s", res.EtcdVersion, v)
			}
			if !strings.Contains(strings.Join(res.Checks, "\n"), fmt.Sprintf("HashKV at revision %d: restored %d, meta %d", m.Revision, m.HashKV.Hash, m.HashKV.Hash)) {
				t.Errorf("checks do not show the hash comparison: %q", res.Checks)
			}
		})
	}
}

// TestVerifyCatchesDamage: a value changed inside the database with every
// hash fixed up, and a meta whose HashKV was tampered with, are both
// caught by the content comparison and reported with what differed; a
// stored object whose bytes changed is refused on its hash, naming it.
func TestVerifyCatchesDamage(t *testing.T) {
	const v = "3.6.16"
	root := binRoot(t, v)
	c := startEtcd(t, root, v, "127.45.71.1")
	fill(t, c, 100)
	opts := verify.Options{BinDirRoot: root, WorkDir: t.TempDir()}

	t.Run("value changed", func(t *testing.T) {
		st := fileStore(t)
		m := take(t, c, st)
		backuptest.DamageValue(t, st, layout, m)
		res, err := verify.Backup(ctxT(t), st, layout, m.Name, opts)
		var ve *verify.Error
		if err == nil || !errors.As(err, &ve) || ve.Reason != backup.VerifyReasonMismatch || res.OK || res.Reason != backup.VerifyReasonMismatch {
			t.Fatalf("damaged value: err %v, result %+v", err, res)
		}
		t.Logf("error: %v", err)
		if len(res.Differences) != 1 || !strings.Contains(res.Differences[0], fmt.Sprintf("HashKV at revision %d", m.Revision)) ||
			!strings.Contains(res.Differences[0], fmt.Sprintf("meta %d", m.HashKV.Hash)) {
			t.Fatalf("differences %q", res.Differences)
		}
	})
	t.Run("meta hash tampered", func(t *testing.T) {
		st := fileStore(t)
		m := take(t, c, st)
		m.HashKV.Hash++
		backuptest.RewriteMeta(t, st, layout, m)
		res, err := verify.Backup(ctxT(t), st, layout, m.Name, opts)
		if err == nil || res.Reason != backup.VerifyReasonMismatch || !strings.Contains(err.Error(), "HashKV at revision") {
			t.Fatalf("tampered meta: err %v, result %+v", err, res)
		}
	})
	t.Run("object bytes changed", func(t *testing.T) {
		st := fileStore(t)
		m := take(t, c, st)
		raw, _, err := store.ReadAll(ctxT(t), st, m.Object)
		if err != nil {
			t.Fatal(err)
		}
		raw[len(raw)/2] ^= 0xff
		if _, err := st.Put(ctxT(t), m.Object, bytes.NewReader(raw), store.Condition{}); err != nil {
			t.Fatal(err)
		}
		res, err := verify.Backup(ctxT(t), st, layout, m.Name, opts)
		url := store.JoinURL(st.URL(), m.Object)
		if err == nil || res.Reason != backup.VerifyReasonIntegrity || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), "sha256") {
			t.Fatalf("changed object: err %v, result %+v; want an integrity error naming %s", err, res, url)
		}
	})
	t.Run("missing backup", func(t *testing.T) {
		st := fileStore(t)
		name := "2026-01-02T03-04-05.000Z-full"
		_, err := verify.Backup(ctxT(t), st, layout, name, opts)
		if err == nil || !strings.Contains(err.Error(), store.JoinURL(st.URL(), backup.MetaKey(layout, name))) {
			t.Fatalf("missing backup: %v", err)
		}
	})
	t.Run("version not installed", func(t *testing.T) {
		st := fileStore(t)
		m := take(t, c, st)
		_, err := verify.Backup(ctxT(t), st, layout, m.Name, verify.Options{BinDirRoot: t.TempDir()})
		var ve *verify.Error
		if err == nil || !errors.As(err, &ve) || ve.Reason != backup.VerifyReasonTools || !strings.Contains(err.Error(), "a version the installed binaries do not cover") {
			t.Fatalf("no binaries: %v", err)
		}
	})
}

// TestVerifyWithDeltas: the delta segments written after a backup are
// replayed into the throwaway etcd and the result is compared with the
// live cluster at the last replayed revision: same key count and HashKV.
func TestVerifyWithDeltas(t *testing.T) {
	const v = "3.6.16"
	root := binRoot(t, v)
	c := startEtcd(t, root, v, "127.45.72.1")
	fill(t, c, 100)
	st := fileStore(t)
	m := take(t, c, st)
	f := backup.NewFollower(c, st, layout, backup.PosAtFull(m), backup.FollowOptions{Interval: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	var last int64
	for i := range 30 {
		resp, err := c.Put(ctxT(t), fmt.Sprintf("/registry/after/k%02d", i), "v")
		if err != nil {
			t.Fatal(err)
		}
		last = resp.Header.Revision
	}
	dresp, err := c.Delete(ctxT(t), "/registry/pods/p0002")
	if err != nil {
		t.Fatal(err)
	}
	last = dresp.Header.Revision
	deadline := time.Now().Add(30 * time.Second)
	for f.Progress().Pos.LastRevision < last {
		if time.Now().After(deadline) {
			t.Fatalf("revision %d not durable: %+v", last, f.Progress())
		}
		time.Sleep(20 * time.Millisecond)
	}
	res, err := verify.Backup(ctxT(t), st, layout, m.Name, verify.Options{BinDirRoot: root, WorkDir: t.TempDir(), Deltas: true, Live: c})
	if err != nil {
		t.Fatalf("verify with deltas: %v\n%+v", err, res)
	}
	t.Logf("checks: %q", res.Checks)
	if res.Segments == 0 || res.ReplayedRevision != last || !res.ComparedWithLive {
		t.Fatalf("result %+v; want segments replayed to %d and compared with the live cluster", res, last)
	}
	if !strings.Contains(strings.Join(res.Checks, "\n"), fmt.Sprintf("HashKV at replayed revision %d", last)) {
		t.Errorf("checks %q", res.Checks)
	}
	// The record round-trips and counts as verified.
	if err := backup.WriteVerification(ctxT(t), st, layout, res); err != nil {
		t.Fatal(err)
	}
	got, err := backup.Verified(ctxT(t), st, layout)
	if err != nil || !got[m.Name] || len(got) != 1 {
		t.Fatalf("Verified = %v, %v", got, err)
	}
}
