// Package e2e holds end-to-end tests that run the agents on booted
// machines with systemd as PID 1 (see e2e/machine and docs/e2e.md). The
// tests need root, debootstrap and systemd-container; they build the
// binaries they run.
package e2e
