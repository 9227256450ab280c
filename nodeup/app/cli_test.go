package app

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kopsnode/agents/pkg/cli"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/file"
)

func cliEnv(out *bytes.Buffer) *cli.Env {
	return &cli.Env{Stdout: out, Stderr: out, Stdin: strings.NewReader("")}
}

func fileOpener(ctx context.Context, bc BootConfig) (store.Store, error) {
	return file.New(strings.TrimPrefix(bc.Store, "file://"), file.Options{})
}

func TestCLIApplyWithBootConfigThenStatus(t *testing.T) {
	f := newFixture(t, "node")
	bc := filepath.Join(t.TempDir(), "boot.yaml")
	// The file carries everything; --root on the command line wins over
	// the file's root.
	os.WriteFile(bc, []byte("store: "+f.url+"\ncluster: test.k8s.local\ngroup: g1\nconfigHash: "+config.FileHash([]byte(f.cfg))+"\nroot: /nonexistent\n"), 0o600)
	app := NewApp(fileOpener)

	var out bytes.Buffer
	code := app.Run(context.Background(), cliEnv(&out), []string{"apply", "--boot-config", bc, "--root", f.root, "--dry-run", "--log-level", "warn"})
	if code != 0 || !strings.Contains(out.String(), "~ file:/etc/containerd/config.toml") {
		t.Fatalf("dry run exit %d:\n%s", code, out.String())
	}
	if _, err := os.Stat(filepath.Join(f.root, StatusPath)); err == nil {
		t.Fatal("dry run wrote a status file")
	}

	out.Reset()
	code = app.Run(context.Background(), cliEnv(&out), []string{"apply", "--boot-config", bc, "--root", f.root, "--log-level", "warn"})
	if code != 0 {
		t.Fatalf("apply exit %d:\n%s", code, out.String())
	}

	out.Reset()
	if code := app.Run(context.Background(), cliEnv(&out), []string{"status", "--root", f.root, "-o", "json"}); code != 0 {
		t.Fatalf("status exit %d:\n%s", code, out.String())
	}
	var st Status
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if st.Result != "converged" || len(st.Phases) != 2 || len(st.Tasks) == 0 || st.Group != "g1" {
		t.Fatalf("status %+v", st)
	}
	out.Reset()
	app.Run(context.Background(), cliEnv(&out), []string{"status", "--root", f.root})
	if !strings.Contains(out.String(), "converged") || !strings.Contains(out.String(), "phase boot") {
		t.Fatalf("human status:\n%s", out.String())
	}
}

func TestCLIUsageErrors(t *testing.T) {
	app := NewApp(fileOpener)
	for _, args := range [][]string{
		{"apply", "--phase", "later", "--store", "file:///x", "--cluster", "c", "--group", "g"},
		{"apply", "--cluster", "c"},
		{"bootstrap-script", "--nodeup-url", "http://x/n"},
	} {
		var out bytes.Buffer
		if code := app.Run(context.Background(), cliEnv(&out), args); code != 2 {
			t.Errorf("%v: exit %d, want 2:\n%s", args, code, out.String())
		}
	}
	var out bytes.Buffer
	app.Run(context.Background(), cliEnv(&out), []string{"apply", "--phase", "later", "--store", "file:///x", "--cluster", "c", "--group", "g"})
	if !strings.Contains(out.String(), "--phase") {
		t.Errorf("error does not name the flag:\n%s", out.String())
	}
}

func TestCLIStatusWithoutRun(t *testing.T) {
	var out bytes.Buffer
	code := NewApp(fileOpener).Run(context.Background(), cliEnv(&out), []string{"status", "--root", t.TempDir()})
	if code != 1 || !strings.Contains(out.String(), "has not run") {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}
}
