package engine

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
)

// ExecRunner runs commands on the host with a clean, non-interactive
// environment.
type ExecRunner struct{}

// Run runs name with args and returns combined output.
func (ExecRunner) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s: %w", cmd.String(), err)
	}
	return out.Bytes(), nil
}

// LookPath reports whether a command exists on the host.
func (ExecRunner) LookPath(name string) error {
	_, err := exec.LookPath(name)
	return err
}
