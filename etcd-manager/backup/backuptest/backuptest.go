// Package backuptest damages stored backups on purpose, for the tests
// that must show verification catching them.
package backuptest

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/store"
)

// RewriteMeta replaces a backup's meta object (a tampered backup area).
func RewriteMeta(t testing.TB, st store.Store, l control.Layout, m backup.Meta) {
	t.Helper()
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := st.Put(ctx, backup.MetaKey(l, m.Name), bytes.NewReader(b), store.Condition{}); err != nil {
		t.Fatal(err)
	}
}

// DamageValue changes one byte of the newest stored key revision inside
// backup m's database and stores the backup again with every hash fixed
// up (etcd's trailing sha256, the meta's db and stored sha256 and sizes):
// only a comparison of the restored content with the meta's HashKV can
// catch it. It returns the rewritten meta.
func DamageValue(t testing.TB, st store.Store, l control.Layout, m backup.Meta) backup.Meta {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	snap, db := filepath.Join(dir, "snap"), filepath.Join(dir, "db")
	if _, err := backup.Read(ctx, st, l, m.Name, snap); err != nil {
		t.Fatal(err)
	}
	if err := backup.ExtractDB(snap, db); err != nil {
		t.Fatal(err)
	}
	bdb, err := bolt.Open(db, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = bdb.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("key"))
		if b == nil {
			return fmt.Errorf("no key bucket in %s", db)
		}
		k, v := b.Cursor().Last()
		if len(v) == 0 {
			return fmt.Errorf("no key revision in %s", db)
		}
		nv := bytes.Clone(v)
		nv[len(nv)-1] ^= 0x20 // the value's last byte (a letter changes case)
		return b.Put(bytes.Clone(k), nv)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := bdb.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw)%512 != 0 { // whole pages: etcdutl must not take a tail for a hash
		t.Fatalf("database of %d bytes", len(raw))
	}
	sum := sha256.Sum256(raw)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(raw)
	_, _ = zw.Write(sum[:])
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, m.Object, bytes.NewReader(gz.Bytes()), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	stored := sha256.Sum256(gz.Bytes())
	m.DBSHA256, m.DBSize = hex.EncodeToString(sum[:]), int64(len(raw))
	m.StoredSHA256, m.StoredSize = hex.EncodeToString(stored[:]), int64(gz.Len())
	RewriteMeta(t, st, l, m)
	return m
}
