// Package storetest is the contract test suite that every state store
// backend passes: each backend's tests call Run with a constructor for a
// fresh, empty store on a real server (or directory), plus options for the
// failures that backend can stage (a missing bucket, bad credentials, a
// server killed mid-write, versioned buckets).
package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kopsnode/agents/pkg/store"
)

// Option enables a part of the suite that needs help from the backend's test.
type Option func(*config)

type config struct {
	largeSize      int64
	missingBucket  func(t *testing.T) store.Store
	badCredentials func(t *testing.T) store.Store
	kill, restart  func(t testing.TB)
	versionCount   func(t *testing.T, s store.Store, key string) int
	listKeys       int
}

// WithMissingBucket runs the missing-bucket cases against a store that
// newStore returns for a bucket (or root directory) that does not exist.
func WithMissingBucket(newStore func(t *testing.T) store.Store) Option {
	return func(c *config) { c.missingBucket = newStore }
}

// WithBadCredentials runs the access-denied cases against a store whose
// credentials the server refuses.
func WithBadCredentials(newStore func(t *testing.T) store.Store) Option {
	return func(c *config) { c.badCredentials = newStore }
}

// WithServerKill runs the killed-mid-write case: kill stops the server
// abruptly while a large Put streams, restart brings it back with its data.
func WithServerKill(kill, restart func(t testing.TB)) Option {
	return func(c *config) { c.kill, c.restart = kill, restart }
}

// WithVersionCount runs the versioned-delete case; count returns how many
// versions (delete markers included) the bucket holds for key.
func WithVersionCount(count func(t *testing.T, s store.Store, key string) int) Option {
	return func(c *config) { c.versionCount = count }
}

// WithLargeSize sets the size of the streamed large object (default 64 MiB).
func WithLargeSize(n int64) Option { return func(c *config) { c.largeSize = n } }

// WithListKeys sets how many keys the pagination case writes (default 25;
// backends set a small page size so that this spans several pages).
func WithListKeys(n int) Option { return func(c *config) { c.listKeys = n } }

const mib = 1 << 20

// Run runs the contract suite. newStore returns a new, empty store; the
// suite closes it.
func Run(t *testing.T, newStore func(t *testing.T) store.Store, opts ...Option) {
	cfg := config{largeSize: 64 * mib, listKeys: 25}
	for _, o := range opts {
		o(&cfg)
	}
	open := func(t *testing.T) store.Store {
		t.Helper()
		s := newStore(t)
		t.Cleanup(func() { s.Close() })
		return s
	}

	t.Run("ReadWriteStat", func(t *testing.T) { testReadWriteStat(t, open(t)) })
	t.Run("OverwriteChangesVersion", func(t *testing.T) { testOverwrite(t, open(t)) })
	t.Run("ListNestedPrefixes", func(t *testing.T) { testListNested(t, open(t)) })
	t.Run("ListManyKeys", func(t *testing.T) { testListMany(t, open(t), cfg.listKeys) })
	t.Run("Delete", func(t *testing.T) { testDelete(t, open(t)) })
	t.Run("MissingObjectIsNotFound", func(t *testing.T) { testNotFound(t, open(t)) })
	t.Run("InvalidKeys", func(t *testing.T) { testInvalidKeys(t, open(t)) })
	t.Run("CreateIfAbsentConcurrent16", func(t *testing.T) { testCreateIfAbsentConcurrent(t, open(t)) })
	t.Run("CompareAndSwap", func(t *testing.T) { testCAS(t, open(t)) })
	t.Run("CompareAndSwapConcurrent", func(t *testing.T) { testCASConcurrent(t, open(t)) })
	t.Run("LargeObjectStreamed", func(t *testing.T) { testLarge(t, open(t), cfg.largeSize) })
	t.Run("ReaderFailsMidWrite", func(t *testing.T) { testReaderFails(t, open(t)) })
	t.Run("ContextCancelledMidWrite", func(t *testing.T) { testCancelled(t, open(t)) })
	if cfg.missingBucket != nil {
		t.Run("MissingBucket", func(t *testing.T) { testMissingBucket(t, cfg.missingBucket(t)) })
	}
	if cfg.badCredentials != nil {
		t.Run("BadCredentials", func(t *testing.T) { testBadCredentials(t, cfg.badCredentials(t)) })
	}
	if cfg.versionCount != nil {
		t.Run("DeleteRemovesEveryVersion", func(t *testing.T) { testVersionedDelete(t, open(t), cfg.versionCount) })
	}
	// Last: it kills the server, which other subtests share.
	if cfg.kill != nil {
		t.Run("ServerKilledMidWrite", func(t *testing.T) { testKilled(t, open(t), cfg) })
	}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func put(t *testing.T, s store.Store, key, content string, cond store.Condition) store.Info {
	t.Helper()
	info, err := s.Put(ctxFor(t), key, strings.NewReader(content), cond)
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	return info
}

func read(t *testing.T, s store.Store, key string) (string, store.Info) {
	t.Helper()
	b, info, err := store.ReadAll(ctxFor(t), s, key)
	if err != nil {
		t.Fatalf("reading %q: %v", key, err)
	}
	return string(b), info
}

// wantErr checks that err wraps kind, is a *store.Error, and names url.
func wantErr(t *testing.T, what string, err, kind error, url string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: got no error, want %v", what, kind)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("%s: got %v, want an error wrapping %q", what, err, kind)
	}
	var se *store.Error
	if !errors.As(err, &se) {
		t.Fatalf("%s: error %v is not a *store.Error", what, err)
	}
	if url != "" && !strings.Contains(err.Error(), url) {
		t.Fatalf("%s: error %q does not name %s", what, err, url)
	}
}

func testReadWriteStat(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	const key, content = "cluster-a/cluster.yaml", "apiVersion: v1\nkind: Cluster\n"
	pinfo := put(t, s, key, content, store.Condition{})
	if pinfo.Key != key || pinfo.Size != int64(len(content)) || pinfo.Version == "" {
		t.Fatalf("Put returned %+v, want key %q, size %d and a version", pinfo, key, len(content))
	}
	sinfo, err := s.Stat(ctx, key)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if sinfo.Key != key || sinfo.Size != int64(len(content)) || sinfo.Version != pinfo.Version {
		t.Fatalf("Stat returned %+v, want key %q, size %d, version %q", sinfo, key, len(content), pinfo.Version)
	}
	if sinfo.Modified.IsZero() || time.Since(sinfo.Modified) > time.Hour || time.Until(sinfo.Modified) > time.Hour {
		t.Fatalf("Stat modified time %v is not about now", sinfo.Modified)
	}
	got, oinfo := read(t, s, key)
	if got != content {
		t.Fatalf("read back %q, want %q", got, content)
	}
	if oinfo.Version != pinfo.Version || oinfo.Size != int64(len(content)) {
		t.Fatalf("Open returned %+v, want version %q size %d", oinfo, pinfo.Version, len(content))
	}
	// An empty object is an object.
	e := put(t, s, "cluster-a/empty", "", store.Condition{})
	if e.Size != 0 {
		t.Fatalf("empty object has size %d", e.Size)
	}
	if got, _ := read(t, s, "cluster-a/empty"); got != "" {
		t.Fatalf("empty object reads back %q", got)
	}
	if !strings.HasPrefix(s.URL(), strings.SplitN(s.URL(), "://", 2)[0]+"://") {
		t.Fatalf("URL %q has no scheme", s.URL())
	}
}

func testOverwrite(t *testing.T, s store.Store) {
	const key = "c/nodeup/nodes.yaml"
	seen := map[store.Version]bool{}
	for i := 0; i < 5; i++ {
		content := fmt.Sprintf("content %d", i)
		info := put(t, s, key, content, store.Condition{})
		if seen[info.Version] {
			t.Fatalf("write %d returned version %q, which an earlier write had", i, info.Version)
		}
		seen[info.Version] = true
		got, rinfo := read(t, s, key)
		if got != content || rinfo.Version != info.Version {
			t.Fatalf("after write %d read %q at %q, want %q at %q", i, got, rinfo.Version, content, info.Version)
		}
	}
	// The same bytes written twice still make two versions on backends that
	// can tell writes apart; ETag-based stores reuse the content hash, so
	// only check that reading works.
	put(t, s, key, "same", store.Condition{})
	put(t, s, key, "same", store.Condition{})
	if got, _ := read(t, s, key); got != "same" {
		t.Fatalf("read %q, want %q", got, "same")
	}
}

func keysOf(infos []store.Info) []string {
	var ks []string
	for _, i := range infos {
		ks = append(ks, i.Key)
	}
	return ks
}

func testListNested(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	keys := []string{
		"c1/cluster.yaml",
		"c1/nodeup/control-plane.yaml",
		"c1/nodeup/nodes.yaml",
		"c1/pki/ca/ca.crt",
		"c1/pki/ca/ca.key",
		"c10/cluster.yaml",
		"c2/cluster.yaml",
		"c1-x",
	}
	for _, k := range keys {
		put(t, s, k, "data of "+k, store.Condition{})
	}
	cases := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"c1-x", "c1/cluster.yaml", "c1/nodeup/control-plane.yaml", "c1/nodeup/nodes.yaml", "c1/pki/ca/ca.crt", "c1/pki/ca/ca.key", "c10/cluster.yaml", "c2/cluster.yaml"}},
		{"c1/", []string{"c1/cluster.yaml", "c1/nodeup/control-plane.yaml", "c1/nodeup/nodes.yaml", "c1/pki/ca/ca.crt", "c1/pki/ca/ca.key"}},
		{"c1", []string{"c1-x", "c1/cluster.yaml", "c1/nodeup/control-plane.yaml", "c1/nodeup/nodes.yaml", "c1/pki/ca/ca.crt", "c1/pki/ca/ca.key", "c10/cluster.yaml"}},
		{"c1/nodeup/", []string{"c1/nodeup/control-plane.yaml", "c1/nodeup/nodes.yaml"}},
		{"c1/nodeup/n", []string{"c1/nodeup/nodes.yaml"}},
		{"c1/pki", []string{"c1/pki/ca/ca.crt", "c1/pki/ca/ca.key"}},
		{"c1/cluster.yaml", []string{"c1/cluster.yaml"}},
		{"nothing/", nil},
		{"c3", nil},
	}
	for _, c := range cases {
		got, err := s.List(ctx, c.prefix)
		if err != nil {
			t.Fatalf("List(%q): %v", c.prefix, err)
		}
		if fmt.Sprint(keysOf(got)) != fmt.Sprint(c.want) {
			t.Errorf("List(%q) = %q, want %q", c.prefix, keysOf(got), c.want)
		}
		for _, i := range got {
			if want := int64(len("data of " + i.Key)); i.Size != want || i.Version == "" {
				t.Errorf("List(%q): %+v, want size %d and a version", c.prefix, i, want)
			}
		}
	}
	// List's versions are the versions Stat reports.
	all, _ := s.List(ctx, "c2/")
	st, err := s.Stat(ctx, "c2/cluster.yaml")
	if err != nil || len(all) != 1 || all[0].Version != st.Version {
		t.Fatalf("List version %v differs from Stat %+v (%v)", all, st, err)
	}
}

func testListMany(t *testing.T, s store.Store, n int) {
	ctx := ctxFor(t)
	var want []string
	for i := 0; i < n; i++ {
		want = append(want, fmt.Sprintf("many/k%04d", i))
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for _, k := range want {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := s.Put(ctx, k, strings.NewReader(k), store.Condition{}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, err := s.List(ctx, "many/")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(keysOf(got)) != fmt.Sprint(want) {
		t.Fatalf("List returned %d keys %q..., want %d", len(got), keysOf(got)[:min(len(got), 5)], n)
	}
}

func testDelete(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	put(t, s, "d/a", "a", store.Condition{})
	put(t, s, "d/b", "b", store.Condition{})
	if err := s.Delete(ctx, "d/a"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Stat(ctx, "d/a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Stat after Delete: %v, want not found", err)
	}
	got, err := s.List(ctx, "d/")
	if err != nil || fmt.Sprint(keysOf(got)) != "[d/b]" {
		t.Fatalf("List after Delete = %q, %v; want [d/b]", keysOf(got), err)
	}
	if err := s.Delete(ctx, "d/a"); err != nil {
		t.Fatalf("Delete of an absent object: %v", err)
	}
	if err := s.Delete(ctx, "never/was"); err != nil {
		t.Fatalf("Delete of a never written object: %v", err)
	}
	// A deleted key can be created again, also create-if-absent.
	put(t, s, "d/a", "again", store.Condition{IfAbsent: true})
	if got, _ := read(t, s, "d/a"); got != "again" {
		t.Fatalf("read %q, want again", got)
	}
}

func testNotFound(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	const key = "no/such/object.yaml"
	url := store.JoinURL(s.URL(), key)
	_, _, err := s.Open(ctx, key)
	wantErr(t, "Open", err, store.ErrNotFound, url)
	_, err = s.Stat(ctx, key)
	wantErr(t, "Stat", err, store.ErrNotFound, url)
	// A key below an existing object is absent too.
	put(t, s, "no/file", "x", store.Condition{})
	_, err = s.Stat(ctx, "no/file/below")
	wantErr(t, "Stat below an object", err, store.ErrNotFound, store.JoinURL(s.URL(), "no/file/below"))
}

func testInvalidKeys(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	for _, key := range []string{"", "/abs/key", "a/../b", "../escape", "a//b", "a/./b", "trailing/", "nul\x00byte"} {
		_, err := s.Put(ctx, key, strings.NewReader("x"), store.Condition{})
		if !errors.Is(err, store.ErrInvalidKey) || !strings.Contains(err.Error(), fmt.Sprintf("%q", key)) {
			t.Errorf("Put(%q) = %v, want an invalid-key error naming the key", key, err)
		}
		if _, err := s.Stat(ctx, key); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("Stat(%q) = %v, want invalid key", key, err)
		}
		if _, _, err := s.Open(ctx, key); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("Open(%q) = %v, want invalid key", key, err)
		}
		if err := s.Delete(ctx, key); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("Delete(%q) = %v, want invalid key", key, err)
		}
	}
	if _, err := s.List(ctx, "../"); !errors.Is(err, store.ErrInvalidKey) {
		t.Errorf("List(../) = %v, want invalid key", err)
	}
	if got, err := s.List(ctx, ""); err != nil || len(got) != 0 {
		t.Errorf("after refused writes List = %q, %v; want nothing", keysOf(got), err)
	}
}

func testCreateIfAbsentConcurrent(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	const key, n = "lock/leader", 16
	var wg sync.WaitGroup
	results := make([]error, n)
	infos := make([]store.Info, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			infos[i], results[i] = s.Put(ctx, key, strings.NewReader(fmt.Sprintf("writer %d", i)), store.Condition{IfAbsent: true})
		}()
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range results {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("writers %d and %d both won create-if-absent", winner, i)
			}
			winner = i
		case errors.Is(err, store.ErrPrecondition):
			wantErr(t, fmt.Sprintf("writer %d", i), err, store.ErrPrecondition, store.JoinURL(s.URL(), key))
		default:
			t.Fatalf("writer %d: %v, want success or a precondition failure", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer won create-if-absent")
	}
	got, info := read(t, s, key)
	if want := fmt.Sprintf("writer %d", winner); got != want || info.Version != infos[winner].Version {
		t.Fatalf("object holds %q at %q, want the winner's %q at %q", got, info.Version, want, infos[winner].Version)
	}
}

func testCAS(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	const key = "control/spec"
	url := store.JoinURL(s.URL(), key)
	// IfVersion on an absent object fails.
	_, err := s.Put(ctx, key, strings.NewReader("x"), store.Condition{IfVersion: "1234"})
	wantErr(t, "IfVersion on absent object", err, store.ErrPrecondition, url)

	v1 := put(t, s, key, "one", store.Condition{IfAbsent: true})
	_, err = s.Put(ctx, key, strings.NewReader("x"), store.Condition{IfAbsent: true})
	wantErr(t, "IfAbsent on existing object", err, store.ErrPrecondition, url)

	v2 := put(t, s, key, "two", store.Condition{IfVersion: v1.Version})
	if v2.Version == v1.Version {
		t.Fatalf("CAS write kept version %q", v1.Version)
	}
	_, err = s.Put(ctx, key, strings.NewReader("stale"), store.Condition{IfVersion: v1.Version})
	wantErr(t, "IfVersion with a stale version", err, store.ErrPrecondition, url)
	if got, info := read(t, s, key); got != "two" || info.Version != v2.Version {
		t.Fatalf("after the refused write the object is %q at %q, want two at %q", got, info.Version, v2.Version)
	}
	v3 := put(t, s, key, "three", store.Condition{IfVersion: v2.Version})
	if got, info := read(t, s, key); got != "three" || info.Version != v3.Version {
		t.Fatalf("object is %q at %q, want three at %q", got, info.Version, v3.Version)
	}
	// After a delete, the old version no longer matches.
	if err := s.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	_, err = s.Put(ctx, key, strings.NewReader("x"), store.Condition{IfVersion: v3.Version})
	wantErr(t, "IfVersion after delete", err, store.ErrPrecondition, url)
}

func testCASConcurrent(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	const key, n = "control/counter", 8
	base := put(t, s, key, "base", store.Condition{})
	var wins atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Put(ctx, key, strings.NewReader(fmt.Sprintf("writer %d", i)), store.Condition{IfVersion: base.Version})
			switch {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, store.ErrPrecondition):
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("CAS writer: %v", err)
	}
	if w := wins.Load(); w != 1 {
		t.Fatalf("%d writers won compare-and-swap from one version, want 1", w)
	}
}

// genReader produces size deterministic pseudo-random bytes, hashing what it
// hands out and counting it.
type genReader struct {
	rng   *rand.ChaCha8
	left  int64
	n     atomic.Int64
	hash  hashWriter
	onPos func(n int64) error // called before each read with the bytes produced so far
}

type hashWriter interface {
	io.Writer
	Sum([]byte) []byte
}

func newGen(size int64, seed byte) *genReader {
	var s [32]byte
	s[0] = seed
	return &genReader{rng: rand.NewChaCha8(s), left: size, hash: sha256.New()}
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.onPos != nil {
		if err := g.onPos(g.n.Load()); err != nil {
			return 0, err
		}
	}
	if g.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > g.left {
		p = p[:g.left]
	}
	g.rng.Read(p)
	g.hash.Write(p)
	g.left -= int64(len(p))
	g.n.Add(int64(len(p)))
	return len(p), nil
}

// heapPeak samples the live heap until stop is called and returns the
// highest value seen.
func heapPeak() (stop func() uint64) {
	done := make(chan struct{})
	result := make(chan uint64)
	go func() {
		var peak uint64
		var ms runtime.MemStats
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-done:
				result <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 { close(done); return <-result }
}

func testLarge(t *testing.T, s store.Store, size int64) {
	ctx := ctxFor(t)
	const key = "backups/etcd/main/large.bin"
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	gen := newGen(size, 1)
	stop := heapPeak()
	info, err := s.Put(ctx, key, gen, store.Condition{IfAbsent: true})
	peak := stop()
	if err != nil {
		t.Fatalf("Put of %d bytes: %v", size, err)
	}
	if gen.n.Load() != size || info.Size != size {
		t.Fatalf("backend read %d bytes and reports size %d, want %d", gen.n.Load(), info.Size, size)
	}
	// A backend that buffered the whole object would hold at least size
	// bytes on the heap at once.
	if grow := int64(peak) - int64(base); grow > size*3/4 {
		t.Fatalf("heap grew by %d MiB while streaming %d MiB: the object was buffered", grow/mib, size/mib)
	}
	t.Logf("streamed %d MiB, heap grew by at most %d MiB", size/mib, (int64(peak)-int64(base))/mib)
	want := gen.hash.Sum(nil)

	rc, oinfo, err := s.Open(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		t.Fatalf("reading back: %v", err)
	}
	if n != size || oinfo.Size != size || oinfo.Version != info.Version {
		t.Fatalf("read back %d bytes, Open says %+v; want %d bytes at %q", n, oinfo, size, info.Version)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want) {
		t.Fatalf("read back sha256 %x, wrote %x", got, want)
	}
}

var errReader = errors.New("reader broke on purpose")

func testReaderFails(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	for _, size := range []int64{100, 12 * mib} {
		key := fmt.Sprintf("fail/at-%d", size)
		gen := newGen(1<<40, 2)
		gen.onPos = func(n int64) error {
			if n >= size {
				return errReader
			}
			return nil
		}
		_, err := s.Put(ctx, key, gen, store.Condition{})
		if err == nil {
			t.Fatalf("Put with a reader failing after %d bytes succeeded", size)
		}
		if !errors.Is(err, errReader) {
			t.Logf("note: Put error does not wrap the reader's error: %v", err)
		}
		if _, err := s.Stat(ctx, key); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("after a failed write Stat(%q) = %v, want not found", key, err)
		}
	}
	// A failed overwrite keeps the old object.
	old := put(t, s, "fail/existing", "old", store.Condition{})
	gen := newGen(1<<40, 3)
	gen.onPos = func(n int64) error {
		if n >= 6*mib {
			return errReader
		}
		return nil
	}
	if _, err := s.Put(ctx, "fail/existing", gen, store.Condition{}); err == nil {
		t.Fatal("failed overwrite succeeded")
	}
	if got, info := read(t, s, "fail/existing"); got != "old" || info.Version != old.Version {
		t.Fatalf("after a failed overwrite the object is %q at %q, want old at %q", got, info.Version, old.Version)
	}
	if got, err := s.List(ctx, "fail/"); err != nil || fmt.Sprint(keysOf(got)) != "[fail/existing]" {
		t.Fatalf("List after failed writes = %q, %v; want only fail/existing", keysOf(got), err)
	}
}

func testCancelled(t *testing.T, s store.Store) {
	for _, size := range []int64{1000, 12 * mib} {
		key := fmt.Sprintf("cancel/at-%d", size)
		ctx, cancel := context.WithCancel(ctxFor(t))
		// Finite, so that a backend that ignores ctx ends (and commits,
		// which the check below catches) rather than reading forever.
		gen := newGen(size+8*mib, 4)
		gen.onPos = func(n int64) error {
			if n >= size {
				cancel()
			}
			return nil
		}
		_, err := s.Put(ctx, key, gen, store.Condition{})
		cancel()
		if err == nil {
			t.Fatalf("Put cancelled after %d bytes succeeded", size)
		}
		if _, err := s.Stat(ctxFor(t), key); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("after a cancelled write Stat(%q) = %v, want not found", key, err)
		}
	}
	if got, err := s.List(ctxFor(t), "cancel/"); err != nil || len(got) != 0 {
		t.Fatalf("List after cancelled writes = %q, %v; want nothing", keysOf(got), err)
	}
}

func testMissingBucket(t *testing.T, s store.Store) { testEveryOpFails(t, s, store.ErrNoBucket) }

func testBadCredentials(t *testing.T, s store.Store) { testEveryOpFails(t, s, store.ErrAccessDenied) }

// testEveryOpFails checks that every operation fails with the error kind
// want and names the URL it was about.
func testEveryOpFails(t *testing.T, s store.Store, want error) {
	t.Cleanup(func() { s.Close() })
	ctx := ctxFor(t)
	const key = "c/cluster.yaml"
	url := store.JoinURL(s.URL(), key)
	_, _, err := s.Open(ctx, key)
	wantErr(t, "Open", err, want, url)
	_, err = s.Stat(ctx, key)
	wantErr(t, "Stat", err, want, url)
	_, err = s.Put(ctx, key, strings.NewReader("x"), store.Condition{})
	wantErr(t, "Put", err, want, url)
	_, err = s.List(ctx, "c/")
	wantErr(t, "List", err, want, store.JoinURL(s.URL(), "c/"))
	err = s.Delete(ctx, key)
	wantErr(t, "Delete", err, want, url)
}

func testVersionedDelete(t *testing.T, s store.Store, count func(t *testing.T, s store.Store, key string) int) {
	ctx := ctxFor(t)
	const key = "v/obj"
	for i := 0; i < 3; i++ {
		put(t, s, key, fmt.Sprintf("version %d", i), store.Condition{})
	}
	if n := count(t, s, key); n != 3 {
		t.Fatalf("bucket holds %d versions of %s after 3 writes, want 3 (is versioning on?)", n, key)
	}
	put(t, s, "v/obj2", "neighbour", store.Condition{})
	if err := s.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, key); n != 0 {
		t.Fatalf("bucket holds %d versions of %s after Delete, want 0", n, key)
	}
	if _, err := s.Stat(ctx, "v/obj2"); err != nil {
		t.Fatalf("Delete of v/obj touched v/obj2: %v", err)
	}
}

func testKilled(t *testing.T, s store.Store, cfg config) {
	const key = "backups/etcd/main/killed.bin"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	gen := newGen(cfg.largeSize, 5)
	killed, restarted := false, false
	// Leave the server running for whoever shares it, even on failure.
	t.Cleanup(func() {
		if killed && !restarted {
			cfg.restart(t)
		}
	})
	gen.onPos = func(n int64) error {
		if !killed && n >= cfg.largeSize/3 {
			killed = true
			cfg.kill(t)
		}
		return nil
	}
	_, err := s.Put(ctx, key, gen, store.Condition{})
	if !killed {
		t.Fatalf("the server was never killed (Put read %d bytes)", gen.n.Load())
	}
	if err == nil {
		t.Fatal("Put succeeded although the server was killed mid-write")
	}
	t.Logf("Put failed as expected: %v", err)
	cfg.restart(t)
	restarted = true
	if _, err := s.Stat(ctxFor(t), key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after the restart Stat = %v, want not found", err)
	}
	if got, err := s.List(ctxFor(t), "backups/"); err != nil || len(got) != 0 {
		t.Fatalf("after the restart List = %q, %v; want nothing", keysOf(got), err)
	}
	// The server still takes writes at the key.
	put(t, s, key, "after restart", store.Condition{IfAbsent: true})
}
