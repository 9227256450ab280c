package main

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestMain runs main instead of the tests when the test binary is re-run as
// the pause process by TestExitsOnSignal.
func TestMain(m *testing.M) {
	if os.Getenv("KOPSNODE_PAUSE_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// TestExitsOnSignal: pause keeps running until SIGTERM or SIGINT, then
// exits 0.
func TestExitsOnSignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), "KOPSNODE_PAUSE_MAIN=1")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				<-done
			})
			// A SIGCHLD (nothing to reap) must not stop it.
			time.Sleep(200 * time.Millisecond)
			if err := cmd.Process.Signal(syscall.SIGCHLD); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				t.Fatalf("pause exited before the signal: %v", err)
				done <- err
			case <-time.After(300 * time.Millisecond):
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("pause exited with %v after %s, want 0", err, sig)
				}
				done <- nil
			case <-time.After(10 * time.Second):
				t.Fatalf("pause still runs 10s after %s", sig)
			}
		})
	}
}
