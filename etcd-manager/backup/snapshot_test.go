package backup

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/kopsnode/agents/etcd-manager/control"
)

// TestDBSplitter feeds etcd's snapshot format (database + sha256) in
// chunks of every size around the hash's length: the database comes out
// whole, and a wrong or missing hash is found.
func TestDBSplitter(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{1, 31, 32, 33, 100, 4096, 70000} {
		db := make([]byte, size)
		for i := range db {
			db[i] = byte(r.IntN(256))
		}
		sum := sha256.Sum256(db)
		stream := append(append([]byte(nil), db...), sum[:]...)
		for _, chunk := range []int{1, 7, 31, 32, 33, 64, 1000, len(stream)} {
			var out bytes.Buffer
			s := newDBSplitter(&out)
			for p := stream; len(p) > 0; {
				n := min(chunk, len(p))
				if _, err := s.Write(p[:n]); err != nil {
					t.Fatal(err)
				}
				p = p[n:]
			}
			if _, err := s.check(); err != nil {
				t.Fatalf("size %d chunk %d: %v", size, chunk, err)
			}
			if !bytes.Equal(out.Bytes(), db) || s.size != int64(size) {
				t.Fatalf("size %d chunk %d: got %d bytes out", size, chunk, out.Len())
			}
		}
		bad := append([]byte(nil), stream...)
		bad[len(bad)/2] ^= 1
		s := newDBSplitter(&bytes.Buffer{})
		s.Write(bad)
		if _, err := s.check(); !errors.Is(err, ErrIntegrity) {
			t.Fatalf("size %d, damaged: %v", size, err)
		}
	}
	s := newDBSplitter(&bytes.Buffer{})
	s.Write(make([]byte, 20))
	if _, err := s.check(); !errors.Is(err, ErrIntegrity) {
		t.Fatalf("a stream shorter than a hash: %v", err)
	}
}

func TestNames(t *testing.T) {
	at := time.Date(2026, 11, 30, 10, 15, 0, 123e6, time.FixedZone("x", 3600))
	name := NameAt(at)
	if name != "2026-11-30T09-15-00.123Z-full" {
		t.Fatalf("NameAt: %s", name)
	}
	got, err := TimeOf(name)
	if err != nil || !got.Equal(at) {
		t.Fatalf("TimeOf(%s) = %s, %v", name, got, err)
	}
	if NameAt(at.Add(time.Millisecond)) <= name || NameAt(at.Add(10*time.Hour)) <= name {
		t.Fatal("names do not sort by time")
	}
	for _, bad := range []string{"", "x", "../2026-11-30T09-15-00.123Z-full", "2026-11-30T09-15-00Z-full", "2026-11-30T09-15-00.123Z-delta"} {
		if ValidateName(bad) == nil {
			t.Errorf("ValidateName(%q) accepted it", bad)
		}
	}
	l := control.Layout{Cluster: "c", EtcdCluster: "events"}
	if k := DataKey(l, name); k != "c/backups/etcd/events/full/"+name+"/snapshot.db.gz" {
		t.Fatalf("DataKey: %s", k)
	}
	if n, f, ok := splitKey(l, MetaKey(l, name)); !ok || n != name || f != "meta.json" {
		t.Fatalf("splitKey: %s %s %v", n, f, ok)
	}
}
