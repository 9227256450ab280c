package testtools

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// FakeGCS is a fake-gcs-server (the standard Google Cloud Storage emulator)
// started by a test on 127.0.0.1 over plain HTTP, with its objects in a
// temporary folder (so Restart keeps them). It is killed by its process id in
// t.Cleanup.
type FakeGCS struct {
	// Endpoint is the server's URL, "http://127.0.0.1:PORT"; set it as
	// STORAGE_EMULATOR_HOST or pass it as the GCS endpoint option.
	Endpoint string

	bin, root, logPath, addr, port, backend string

	mu   sync.Mutex // guards cmd and done
	cmd  *exec.Cmd
	done chan struct{}
}

// FakeGCSOptions configures StartFakeGCSWith.
type FakeGCSOptions struct {
	// Memory keeps objects in memory instead of a folder: they are lost on
	// Restart, but object versioning works (the folder backend refuses it).
	Memory bool
}

// StartFakeGCS starts fake-gcs-server with its folder backend and waits
// until it answers.
func StartFakeGCS(t testing.TB) *FakeGCS {
	t.Helper()
	return StartFakeGCSWith(t, FakeGCSOptions{})
}

// StartFakeGCSWith starts fake-gcs-server with options.
func StartFakeGCSWith(t testing.TB, opts FakeGCSOptions) *FakeGCS {
	t.Helper()
	dir := t.TempDir()
	f := &FakeGCS{
		bin:     Binary(t, "fake-gcs-server"),
		root:    filepath.Join(dir, "storage"),
		logPath: filepath.Join(dir, "fake-gcs.log"),
		backend: "filesystem",
	}
	if opts.Memory {
		f.backend = "memory"
	}
	if err := os.MkdirAll(f.root, 0o755); err != nil {
		t.Fatalf("fake-gcs: %v", err)
	}
	t.Cleanup(f.stop)
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		f.addr = freeAddr(t)
		f.port = f.addr[len("127.0.0.1:"):]
		f.Endpoint = "http://" + f.addr
		if lastErr = f.start(); lastErr == nil {
			return f
		}
		f.stop()
	}
	t.Fatalf("fake-gcs: %v", lastErr)
	return nil
}

// CreateBucket creates a bucket through the JSON API.
func (f *FakeGCS) CreateBucket(t testing.TB, name string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"name": name})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.Endpoint+"/storage/v1/b?project=test", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("fake-gcs: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("fake-gcs: creating bucket %s: %v", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		t.Fatalf("fake-gcs: creating bucket %s: %s: %s", name, resp.Status, b)
	}
}

// Kill stops the server abruptly (SIGKILL) and waits for it to exit.
func (f *FakeGCS) Kill(t testing.TB) {
	t.Helper()
	f.stop()
}

// Restart starts the server again on the same address and storage folder.
func (f *FakeGCS) Restart(t testing.TB) {
	t.Helper()
	f.stop()
	if err := f.start(); err != nil {
		t.Fatalf("fake-gcs restart: %v", err)
	}
}

// Log returns the server's output so far.
func (f *FakeGCS) Log() string {
	b, _ := os.ReadFile(f.logPath)
	return string(b)
}

func (f *FakeGCS) start() error {
	logf, err := os.OpenFile(f.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(f.bin,
		"-scheme", "http",
		"-host", "127.0.0.1",
		"-port", f.port,
		"-public-host", f.addr,
		"-external-url", f.Endpoint,
		"-backend", f.backend,
		"-filesystem-root", f.root,
		"-log-level", "warn",
	)
	cmd.Dir = filepath.Dir(f.root)
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", f.bin, err)
	}
	done := make(chan struct{})
	f.mu.Lock()
	f.cmd, f.done = cmd, done
	f.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	if err := waitReady(f.Endpoint+"/storage/v1/b", 30*time.Second, done); err != nil {
		return fmt.Errorf("server on %s not ready: %w\n--- fake-gcs-server log ---\n%s", f.addr, err, tail(f.Log(), 4000))
	}
	return nil
}

func (f *FakeGCS) stop() {
	f.mu.Lock()
	cmd, done := f.cmd, f.done
	f.cmd, f.done = nil, nil
	f.mu.Unlock()
	killAndWait(cmd, done)
}
