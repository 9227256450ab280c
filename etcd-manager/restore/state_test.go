package restore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/identity"
	"github.com/kopsnode/agents/pkg/store/file"
)

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestStateFence: the first Save of a restore is create-if-absent (one
// leader wins), later ones compare-and-swap (a stale leader loses).
func TestStateFence(t *testing.T) {
	ctx := context.Background()
	st, err := file.New(t.TempDir(), file.Options{CreateRoot: true})
	if err != nil {
		t.Fatal(err)
	}
	l := control.Layout{Cluster: "c", EtcdCluster: "main"}
	s := State{FormatVersion: FormatVersion, CommandID: "20261130T101500.000Z-restore-backup", Kind: control.KindRestoreBackup, Phase: PhaseValidating}
	v1, err := Save(ctx, st, l, s, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Save(ctx, st, l, s, ""); !errors.Is(err, ErrLost) {
		t.Fatalf("second create: %v, want ErrLost", err)
	}
	s.Phase = PhaseFailed
	s.Error = "x"
	v2, err := Save(ctx, st, l, s, v1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Save(ctx, st, l, s, v1); !errors.Is(err, ErrLost) {
		t.Fatalf("write on a stale version: %v, want ErrLost", err)
	}
	got, v, ok, err := Load(ctx, st, l, s.CommandID)
	if err != nil || !ok || v != v2 || got.Phase != PhaseFailed {
		t.Fatalf("Load = %+v %q %v %v", got, v, ok, err)
	}
	ids, err := List(ctx, st, l)
	if err != nil || len(ids) != 1 || ids[0] != s.CommandID {
		t.Fatalf("List = %v, %v", ids, err)
	}
	// A state past validation without a plan is refused, naming the fields.
	bad := s
	bad.Phase = PhaseRestoring
	if _, err := Save(ctx, st, l, bad, v2); err == nil || !strings.Contains(err.Error(), "newClusterToken") {
		t.Fatalf("Save of a planless restoring state: %v", err)
	}
}

func TestLocalAndAside(t *testing.T) {
	dir := t.TempDir()
	if _, ok, err := LoadLocal(dir); ok || err != nil {
		t.Fatalf("no file: %v %v", ok, err)
	}
	l := Local{CommandID: "c1", Step: StepQuarantined, NewToken: "n", Old: identity.State{ID: "m1", ClusterToken: "o"}}
	if err := SaveLocal(dir, l); err != nil {
		t.Fatal(err)
	}
	got, ok, err := LoadLocal(dir)
	if err != nil || !ok || got.CommandID != "c1" || !got.Quarantined() || got.Blocked() || got.Old.ClusterToken != "o" {
		t.Fatalf("LoadLocal = %+v %v %v", got, ok, err)
	}
	if err := os.WriteFile(filepath.Join(dir, LocalFileName), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadLocal(dir); err == nil || !strings.Contains(err.Error(), LocalFileName) {
		t.Fatalf("corrupt file: %v", err)
	}
	base := mustTime(t, "2026-11-30T10:00:00Z")
	for i := range 4 {
		if err := os.MkdirAll(AsideDirName(dir, base.Add(time.Duration(i)*time.Hour)), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := PruneAside(dir, KeepAside)
	if err != nil || len(removed) != 2 {
		t.Fatalf("PruneAside = %v, %v", removed, err)
	}
	left, _ := AsideDirs(dir)
	if len(left) != 2 || !strings.Contains(left[0], "20261130T120000") || !strings.Contains(left[1], "20261130T130000") {
		t.Fatalf("kept %v; want the two newest", left)
	}
}
