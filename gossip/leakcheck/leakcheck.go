// Package leakcheck finds goroutines that tests left running: a TestMain
// calls Main, which fails the run when goroutines with frames in the given
// packages outlive the tests.
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Main runs the tests and then waits up to five seconds for every
// goroutine with a frame under one of the package path prefixes to end;
// it exits non-zero listing those that remain.
func Main(m *testing.M, prefixes ...string) {
	code := m.Run()
	if code == 0 {
		if err := Check(5*time.Second, prefixes...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// Check waits up to timeout for goroutines running code under the prefixes
// (other than the test runner's own) to end.
func Check(timeout time.Duration, prefixes ...string) error {
	deadline := time.Now().Add(timeout)
	for {
		buf := make([]byte, 4<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "leakcheck.Check") || strings.Contains(g, "testing.(*M).Run") {
				continue
			}
			for _, p := range prefixes {
				if strings.Contains(g, p) {
					leaked = append(leaked, g)
					break
				}
			}
		}
		if len(leaked) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d goroutines outlived the tests:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
