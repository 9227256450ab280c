package manager_test

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The tests that run clusters call t.Parallel: each cluster has its own
// loopback prefix (127.44.N, unique across the module's tests), stores and
// directories, and spends most of its time waiting on etcd and the
// manager's ticks, so running them side by side (go test's -parallel,
// GOMAXPROCS by default) halves the package's wall time without changing
// what each one asserts. A test that sets the environment (t.Setenv) stays
// sequential.
//
// TestMain fails the package when goroutines started by the tests are
// still running a while after the last test: every manager, server, loop
// and etcd watcher must be stopped by Close.
func TestMain(m *testing.M) {
	base := runtime.NumGoroutine()
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > base {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			fmt.Fprintf(os.Stderr, "goroutine leak: %d goroutines at start, %d after the tests:\n%s\n", base, n, leaked(string(buf)))
			code = 1
		}
	}
	os.Exit(code)
}

func leaked(stacks string) string {
	var out []string
	for _, g := range strings.Split(stacks, "\n\n") {
		if strings.Contains(g, "TestMain") || strings.Contains(g, "runtime.Stack") {
			continue
		}
		out = append(out, g)
	}
	return strings.Join(out, "\n\n")
}
