package file

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := New(t.TempDir(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}, storetest.WithMissingBucket(func(t *testing.T) store.Store {
		s, err := New(filepath.Join(t.TempDir(), "missing"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}))
}

func TestRelativeRootRefused(t *testing.T) {
	_, err := New("relative/dir", Options{})
	if err == nil || !strings.Contains(err.Error(), "relative/dir") {
		t.Fatalf("New(relative) = %v, want an error naming the path", err)
	}
}

func TestCreateRoot(t *testing.T) {
	root := filepath.Join(t.TempDir(), "a", "b")
	s, err := New(root, Options{CreateRoot: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(context.Background(), "k", strings.NewReader("v"), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(root); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("root %v, %v; want a 0700 directory", fi, err)
	}
}

func TestObjectsArePrivateFiles(t *testing.T) {
	root := t.TempDir()
	s, _ := New(root, Options{})
	if _, err := s.Put(context.Background(), "pki/ca.key", strings.NewReader("secret"), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(root, "pki", "ca.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("object file %v, %v; want mode 0600", fi, err)
	}
}

// A write that crashed before its rename leaves a temporary file: it is never
// listed or readable as an object, and a later New removes it once stale.
func TestCrashedWriteTempFile(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, _ := New(root, Options{})
	if _, err := s.Put(ctx, "c/cluster.yaml", strings.NewReader("x"), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(root, "c", tempPrefix+"123")
	fresh := filepath.Join(root, "c", tempPrefix+"456")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	got, err := s.List(ctx, "")
	if err != nil || len(got) != 1 || got[0].Key != "c/cluster.yaml" {
		t.Fatalf("List = %+v, %v; want only c/cluster.yaml", got, err)
	}
	if _, err := s.Stat(ctx, "c/"+tempPrefix+"123"); !errors.Is(err, store.ErrInvalidKey) {
		t.Fatalf("Stat of a temp file name = %v, want invalid key", err)
	}
	if _, err := New(root, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale temp file still there: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Fatalf("a fresh temp file (maybe a write in progress) was removed: %v", err)
	}
}

// A file edited in place by hand gets a new version, so a CAS based on the
// version read before the edit fails.
func TestHandEditChangesVersion(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, _ := New(root, Options{})
	info, err := s.Put(ctx, "c/cluster.yaml", strings.NewReader("one"), store.Condition{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "c", "cluster.yaml"), []byte("edited"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = s.Put(ctx, "c/cluster.yaml", strings.NewReader("two"), store.Condition{IfVersion: info.Version})
	if !errors.Is(err, store.ErrPrecondition) {
		t.Fatalf("CAS after a hand edit = %v, want precondition failure", err)
	}
}

// Two Store values on one directory (two processes) exclude each other.
func TestTwoStoresOneDirectory(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	a, _ := New(root, Options{})
	b, _ := New(root, Options{})
	if _, err := a.Put(ctx, "lock", strings.NewReader("a"), store.Condition{IfAbsent: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(ctx, "lock", strings.NewReader("b"), store.Condition{IfAbsent: true}); !errors.Is(err, store.ErrPrecondition) {
		t.Fatalf("second store's create-if-absent = %v, want precondition failure", err)
	}
}
