package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/pem"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/file"
)

// fakeClock is a settable clock for expiry tests.
type fakeClock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newFileStore opens the real file backend on dir (a fresh temp dir when
// empty).
func newFileStore(t *testing.T, dir string) store.Store {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	s, err := file.New(dir, file.Options{CreateRoot: true})
	if err != nil {
		t.Fatalf("file.New(%s): %v", dir, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// newKeystore is a keystore on a fresh file store with a fake clock.
func newKeystore(t *testing.T) (*Keystore, store.Store, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	ks, s := newKeystoreClock(t, clk.Now)
	return ks, s, clk
}

// newKeystoreClock is a keystore on a fresh file store with the given clock
// (time.Now for tests that do real TLS handshakes).
func newKeystoreClock(t *testing.T, clock func() time.Time) (*Keystore, store.Store) {
	t.Helper()
	s := newFileStore(t, "")
	ks, err := NewKeystore(s, "test-cluster/pki", testLogger(t), clock)
	if err != nil {
		t.Fatalf("NewKeystore: %v", err)
	}
	return ks, s
}

func mustEnsureCA(t *testing.T, ks *Keystore, name string, opts CAOptions) *CA {
	t.Helper()
	ca, err := ks.EnsureCA(context.Background(), name, opts)
	if err != nil {
		t.Fatalf("EnsureCA(%s): %v", name, err)
	}
	return ca
}

func mustIssue(t *testing.T, ca *CA, req CertRequest) *Keypair {
	t.Helper()
	kp, err := ca.Issue(req)
	if err != nil {
		t.Fatalf("Issue(%+v): %v", req, err)
	}
	return kp
}

func slogText(w *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func mustECDSA(t *testing.T, k crypto.Signer) *ecdsa.PrivateKey {
	t.Helper()
	pk, ok := k.(*PrivateKey)
	if !ok {
		t.Fatalf("key is %T, want *PrivateKey", k)
	}
	ec, ok := pk.Unwrap().(*ecdsa.PrivateKey)
	if !ok {
		t.Fatalf("key is %T, want ECDSA", pk.Unwrap())
	}
	return ec
}

func mustRSA(t *testing.T, k crypto.Signer) *rsa.PrivateKey {
	t.Helper()
	pk, ok := k.(*PrivateKey)
	if !ok {
		t.Fatalf("key is %T, want *PrivateKey", k)
	}
	r, ok := pk.Unwrap().(*rsa.PrivateKey)
	if !ok {
		t.Fatalf("key is %T, want RSA", pk.Unwrap())
	}
	return r
}
