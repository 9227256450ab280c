package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/kopsnode/agents/pkg/cli"
)

// The binary offers gossip-keys: create then show through the real app.
func TestGossipKeysWired(t *testing.T) {
	dir := t.TempDir()
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := app().Run(context.Background(), &cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader("")}, args)
		return code, out.String(), errb.String()
	}
	if code, out, _ := run("help"); code != 0 || !strings.Contains(out, "gossip-keys") {
		t.Fatalf("help does not list gossip-keys:\n%s", out)
	}
	flags := []string{"--store", "file://" + dir, "--cluster", "wired.k8s.local"}
	if code, out, errOut := run(append([]string{"gossip-keys", "create"}, flags...)...); code != 0 || !strings.Contains(out, "created") {
		t.Fatalf("gossip-keys create: exit %d\n%s%s", code, out, errOut)
	}
	if _, err := os.Stat(dir + "/wired.k8s.local/secrets/gossip-keys"); err != nil {
		t.Fatalf("keyring not written: %v", err)
	}
	if code, out, errOut := run(append([]string{"gossip-keys", "show"}, flags...)...); code != 0 || !strings.Contains(out, "keys:       1") {
		t.Fatalf("gossip-keys show: exit %d\n%s%s", code, out, errOut)
	}
}

// The binary offers manifests and manifests-status; a missing required flag
// is a usage error naming it.
func TestManifestsWired(t *testing.T) {
	var out, errb bytes.Buffer
	env := &cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader("")}
	if code := app().Run(context.Background(), env, []string{"help"}); code != 0 || !strings.Contains(out.String(), "manifests-status") || !strings.Contains(out.String(), "manifests ") {
		t.Fatalf("help does not list manifests and manifests-status:\n%s", out.String())
	}
	if code := app().Run(context.Background(), env, []string{"manifests", "--config", "/nonexistent"}); code != 2 || !strings.Contains(errb.String(), "--store: required") {
		t.Fatalf("manifests without --store: exit %d\n%s", code, errb.String())
	}
}
