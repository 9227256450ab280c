// Package leakcheck fails a test binary whose tests left goroutines of this
// module running: every goroutine must be owned and stopped.
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Main runs the tests, then waits up to five seconds for goroutines started
// from this module's code to end, and fails the binary if any remain.
func Main(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := wait(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines leaked by the tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

func wait(d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		leaked := ours()
		if leaked == "" || time.Now().After(deadline) {
			return leaked
		}
		runtime.Gosched()
		time.Sleep(20 * time.Millisecond) // polling a condition, bounded by the deadline
	}
}

func ours() string {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	var out []string
	for _, g := range strings.Split(string(buf[:n]), "\n\n") {
		if strings.Contains(g, "leakcheck.ours") || strings.Contains(g, "testing.(*M)") || strings.Contains(g, "testing.Main") {
			continue
		}
		if strings.Contains(g, "github.com/kopsnode/agents/") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
