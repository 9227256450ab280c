package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/pkg/store"
)

// zeros yields zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

const crashRootEnv = "KOPSNODE_STORE_CRASH_ROOT"

// TestMain turns the test binary into the writer process of
// TestProcessKilledMidWrite when the environment says so: it streams a
// (bounded) 1 GiB object into the store until it is killed.
func TestMain(m *testing.M) {
	if root := os.Getenv(crashRootEnv); root != "" {
		s, err := New(root, Options{})
		if err == nil {
			_, err = s.Put(context.Background(), "c/backup.bin", io.LimitReader(zeros{}, 1<<30), store.Condition{})
		}
		fmt.Fprintf(os.Stderr, "writer finished without being killed: %v\n", err)
		os.Exit(3)
	}
	os.Exit(m.Run())
}

// A process killed (SIGKILL) while it streams an object leaves nothing
// visible; its temporary file is removed by a later New once stale.
func TestProcessKilledMidWrite(t *testing.T) {
	root := t.TempDir()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), crashRootEnv+"="+root)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })

	// Wait until the child has written a few MiB into its temp file.
	var tmp string
	deadline := time.Now().Add(30 * time.Second)
	for tmp == "" {
		matches, _ := filepath.Glob(filepath.Join(root, "c", tempPrefix+"*"))
		if len(matches) == 1 {
			if fi, err := os.Stat(matches[0]); err == nil && fi.Size() > 4<<20 {
				tmp = matches[0]
				break
			}
		}
		select {
		case <-done:
			t.Fatal("writer process exited before it was killed")
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("writer process wrote nothing within 30s")
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-done

	s, err := New(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Stat(ctx, "c/backup.bin"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after the kill Stat = %v, want not found", err)
	}
	if got, err := s.List(ctx, ""); err != nil || len(got) != 0 {
		t.Fatalf("after the kill List = %+v, %v; want nothing", got, err)
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Fatalf("the fresh temp file should stay until stale: %v", err)
	}
	if _, err := New(root, Options{StaleTempAge: time.Nanosecond}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale temp file %s not removed: %v", tmp, err)
	}
	if _, err := s.Put(ctx, "c/backup.bin", strings.NewReader("ok"), store.Condition{IfAbsent: true}); err != nil {
		t.Fatalf("writing after the crash: %v", err)
	}
}
