package gcs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"google.golang.org/api/iterator"

	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/storetest"
	"github.com/kopsnode/agents/pkg/testtools"
)

func newStore(t *testing.T, f *testtools.FakeGCS, bucket, prefix string) *Store {
	t.Helper()
	s, err := New(context.Background(), Options{
		Bucket:             bucket,
		Prefix:             prefix,
		Endpoint:           f.Endpoint,
		ChunkSize:          4 << 20,
		ChunkRetryDeadline: 3 * time.Second,
		ListPageSize:       7,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestContract runs the contract suite against fake-gcs-server, one fresh
// bucket per store. fake-gcs-server does not check credentials, so the
// bad-credentials case cannot run here.
func TestContract(t *testing.T) {
	f := testtools.StartFakeGCS(t)
	var n atomic.Int32
	storetest.Run(t, func(t *testing.T) store.Store {
		b := fmt.Sprintf("store-%03d", n.Add(1))
		f.CreateBucket(t, b)
		return newStore(t, f, b, "clusters")
	},
		storetest.WithMissingBucket(func(t *testing.T) store.Store {
			return newStore(t, f, "no-such-bucket", "clusters")
		}),
		storetest.WithServerKill(f.Kill, f.Restart),
	)
}

// TestEmulatorHostVariable: with no endpoint option the client library finds
// the emulator through STORAGE_EMULATOR_HOST.
func TestEmulatorHostVariable(t *testing.T) {
	f := testtools.StartFakeGCS(t)
	f.CreateBucket(t, "env")
	t.Setenv("STORAGE_EMULATOR_HOST", f.Endpoint)
	s, err := New(context.Background(), Options{Bucket: "env"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if _, err := s.Put(ctx, "k", strings.NewReader("v"), store.Condition{IfAbsent: true}); err != nil {
		t.Fatal(err)
	}
	b, _, err := store.ReadAll(ctx, s, "k")
	if err != nil || string(b) != "v" {
		t.Fatalf("read %q, %v", b, err)
	}
}

// Delete removes every generation on a bucket with object versioning.
func TestDeleteVersioned(t *testing.T) {
	f := testtools.StartFakeGCSWith(t, testtools.FakeGCSOptions{Memory: true})
	f.CreateBucket(t, "versioned")
	s := newStore(t, f, "versioned", "")
	defer s.Close()
	ctx := context.Background()
	if _, err := s.client.Bucket("versioned").Update(ctx, storage.BucketAttrsToUpdate{VersioningEnabled: true}); err != nil {
		t.Fatalf("enabling versioning: %v", err)
	}
	for i := 0; i < 3; i++ {
		if _, err := s.Put(ctx, "obj", strings.NewReader(fmt.Sprint(i)), store.Condition{}); err != nil {
			t.Fatal(err)
		}
	}
	count := func() int {
		it := s.client.Bucket("versioned").Objects(ctx, &storage.Query{Prefix: "obj", Versions: true})
		n := 0
		for {
			_, err := it.Next()
			if err == iterator.Done {
				return n
			}
			if err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	if n := count(); n != 3 {
		t.Fatalf("%d generations after 3 writes, want 3", n)
	}
	if err := s.Delete(ctx, "obj"); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d generations after Delete, want 0", n)
	}
}

// Preconditions hold for uploads of several chunks (resumable uploads):
// the server checks them when the upload is finalized.
func TestResumableConditions(t *testing.T) {
	f := testtools.StartFakeGCS(t)
	f.CreateBucket(t, "resumable")
	s := newStore(t, f, "resumable", "p")
	defer s.Close()
	ctx := context.Background()
	big := func(c byte) io.Reader { return strings.NewReader(strings.Repeat(string(c), 10<<20)) }
	v1, err := s.Put(ctx, "obj", big('a'), store.Condition{IfAbsent: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "obj", big('b'), store.Condition{IfAbsent: true}); !errors.Is(err, store.ErrPrecondition) {
		t.Fatalf("resumable create-if-absent over an object = %v, want precondition failure", err)
	}
	v2, err := s.Put(ctx, "obj", big('c'), store.Condition{IfVersion: v1.Version})
	if err != nil {
		t.Fatalf("resumable CAS from the current version: %v", err)
	}
	if _, err := s.Put(ctx, "obj", big('d'), store.Condition{IfVersion: v1.Version}); !errors.Is(err, store.ErrPrecondition) {
		t.Fatalf("resumable CAS from a stale version = %v, want precondition failure", err)
	}
	b, info, err := store.ReadAll(ctx, s, "obj")
	if err != nil {
		t.Fatal(err)
	}
	if info.Version != v2.Version || len(b) != 10<<20 || b[0] != 'c' || b[len(b)-1] != 'c' {
		t.Fatalf("object is %d bytes of %q at %s, want the CAS write at %s", len(b), b[:1], info.Version, v2.Version)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(context.Background(), Options{}); err == nil {
		t.Fatal("New without a bucket succeeded")
	}
	_, err := New(context.Background(), Options{Bucket: "b", Prefix: "x/../y", Endpoint: "http://127.0.0.1:1"})
	if err == nil || !strings.Contains(err.Error(), "gs://b/x/../y") {
		t.Fatalf("bad prefix: %v, want an error naming the URL", err)
	}
}

// fake-gcs-server does not check credentials, so refused credentials are
// staged by a local server that answers every request the way GCS answers a
// caller without permission (403 with a JSON error).
func TestAccessDenied(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"error":{"code":403,"message":"caller does not have storage.objects.get access","errors":[{"reason":"forbidden"}]}}`)
	}))
	defer srv.Close()
	s, err := New(context.Background(), Options{Bucket: "denied", Prefix: "c", Endpoint: srv.URL, ChunkRetryDeadline: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	check := func(op string, err error, key string) {
		t.Helper()
		want := store.JoinURL("gs://denied/c", key)
		if !errors.Is(err, store.ErrAccessDenied) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s = %v; want access denied naming %s", op, err, want)
		}
	}
	_, err = s.Stat(ctx, "k")
	check("Stat", err, "k")
	_, _, err = s.Open(ctx, "k")
	check("Open", err, "k")
	_, err = s.Put(ctx, "k", strings.NewReader("v"), store.Condition{})
	check("Put", err, "k")
	_, err = s.List(ctx, "p/")
	check("List", err, "p/")
	check("Delete", s.Delete(ctx, "k"), "k")
}
