package machine

import (
	"fmt"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Listen opens a listening socket inside the machine's network namespace,
// for example a test server on 127.0.0.1:0 that only the machine reaches.
// For a machine sharing the host's network it is net.Listen.
func (m *Machine) Listen(network, addr string) (net.Listener, error) {
	if m.netns == "" {
		return net.Listen(network, addr)
	}
	return listenInNetNS(m.netns, network, addr)
}

// listenInNetNS switches one locked OS thread into the namespace, opens
// the socket (which stays in that namespace) and switches back. A thread
// that cannot switch back is left locked, so the runtime discards it.
func listenInNetNS(nsPath, network, addr string) (net.Listener, error) {
	type result struct {
		ln  net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		target, err := os.Open(nsPath)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("opening network namespace %s: %w", nsPath, err)}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("entering network namespace %s: %w", nsPath, err)}
			return
		}
		ln, lerr := net.Listen(network, addr)
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Stay locked: the goroutine ends and the thread with it.
			if ln != nil {
				ln.Close()
			}
			ch <- result{err: fmt.Errorf("returning from network namespace %s: %w", nsPath, err)}
			return
		}
		runtime.UnlockOSThread()
		if lerr != nil {
			lerr = fmt.Errorf("listening on %s %s in %s: %w", network, addr, nsPath, lerr)
		}
		ch <- result{ln, lerr}
	}()
	r := <-ch
	return r.ln, r.err
}
