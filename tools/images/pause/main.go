// Command pause is the pod sandbox's process, packed as the image
// registry.k8s.io/pause by tools/build-test-tools.sh: it holds the pod's
// namespaces open, reaps the children it inherits as PID 1, and exits 0 on
// SIGTERM or SIGINT. Built statically (CGO_ENABLED=0).
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s == syscall.SIGCHLD {
			reap()
			continue
		}
		fmt.Fprintf(os.Stderr, "pause: %s, exiting\n", s)
		os.Exit(0)
	}
}

// reap waits for every exited child without blocking; signals coalesce, so
// one SIGCHLD may stand for several children.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
