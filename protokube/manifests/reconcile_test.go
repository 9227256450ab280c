package manifests

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kopsnode/agents/pkg/bootstraptoken"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/file"
)

// Before the API server can be reached, a pass reports why, naming the file
// or address, and never panics.
func TestPassReportsWhatIsMissing(t *testing.T) {
	dir := t.TempDir()
	st, err := file.New(filepath.Join(dir, "store"), file.Options{CreateRoot: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg := DefaultConfig()
	cfg.ConfigFile = filepath.Join(dir, "missing.yaml")
	cfg.Store.URL = st.URL()
	cfg.Kubeconfig = filepath.Join(dir, "admin.conf")
	r, err := NewReconciler(cfg, Deps{Store: st, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := r.health(ctx); err == nil || !strings.Contains(err.Error(), "no pass yet") {
		t.Errorf("health before a pass: %v", err)
	}

	s := r.Pass(ctx)
	if s.Ready || s.APIReady || !strings.Contains(s.Error, "missing.yaml") {
		t.Errorf("missing configuration: %+v", s)
	}

	writeNodeConfig(t, cfg.ConfigFile, "", "")
	s = r.Pass(ctx)
	if s.Ready || s.APIReady || !strings.Contains(s.Error, "admin.conf") || s.Cluster != testCluster {
		t.Errorf("missing kubeconfig: %+v", s)
	}
	// The store has no token yet: the control plane creates it, even
	// before the API server answers, so that workers can read it.
	tok, err := bootstraptoken.ReadUsable(ctx, st, testCluster, time.Now())
	if err != nil {
		t.Fatalf("no usable token after a pass: %v", err)
	}
	if len(s.InputErrors) != 0 || s.BootstrapToken == nil || s.BootstrapToken.Current != tok.Token.ID ||
		!s.BootstrapToken.Expires.Equal(tok.Expires) || len(s.BootstrapToken.Valid) != 1 {
		t.Errorf("input errors %v, token status %+v", s.InputErrors, s.BootstrapToken)
	}
	// An unreadable token is reported with its URL, not fatal, and left
	// as it is.
	if _, err := st.Put(ctx, bootstraptoken.Key(testCluster), strings.NewReader("not a token"), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	s = r.Pass(ctx)
	if len(s.InputErrors) != 1 || !strings.Contains(s.InputErrors[0], "secrets/node-bootstrap-token") {
		t.Errorf("input errors: %v", s.InputErrors)
	}
	if err := r.health(ctx); err == nil || !strings.Contains(err.Error(), "admin.conf") {
		t.Errorf("health: %v", err)
	}
	if s.Passes != 3 || s.LastPass.IsZero() || !s.LastSuccess.IsZero() {
		t.Errorf("pass accounting: %+v", s)
	}
}

func TestNewReconcilerNeedsStore(t *testing.T) {
	if _, err := NewReconciler(DefaultConfig(), Deps{}); err == nil {
		t.Error("no store accepted")
	}
}

// Close stops the loop promptly even while it backs off, and twice is fine.
func TestDaemonClose(t *testing.T) {
	dir := t.TempDir()
	st, err := file.New(filepath.Join(dir, "store"), file.Options{CreateRoot: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg := DefaultConfig()
	cfg.ConfigFile, cfg.Store.URL, cfg.Kubeconfig = filepath.Join(dir, "none.yaml"), st.URL(), filepath.Join(dir, "none.conf")
	cfg.StatusListen = "127.0.0.1:0"
	d, err := Start(context.Background(), cfg, Deps{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a pass", func() error {
		if d.Status().Passes == 0 {
			return context.DeadlineExceeded
		}
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- d.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// A token that expired while no control-plane node ran (a cluster switched
// off for days) is replaced on the first pass, before the API server
// answers, and the expired one is neither kept nor published.
func TestPassReplacesAnExpiredToken(t *testing.T) {
	dir := t.TempDir()
	st, err := file.New(filepath.Join(dir, "store"), file.Options{CreateRoot: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	old, err := bootstraptoken.Generate()
	if err != nil {
		t.Fatal(err)
	}
	b, err := bootstraptoken.Encode(bootstraptoken.Tokens{Current: bootstraptoken.Issued{Token: old, Created: now.Add(-72 * time.Hour), Expires: now.Add(-48 * time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := st.Put(ctx, bootstraptoken.Key(testCluster), bytes.NewReader(b), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.ConfigFile, cfg.Store.URL, cfg.Kubeconfig = filepath.Join(dir, "c.yaml"), st.URL(), filepath.Join(dir, "admin.conf")
	writeNodeConfig(t, cfg.ConfigFile, "", "")
	var logs bytes.Buffer
	r, err := NewReconciler(cfg, Deps{Store: st, Registry: prometheus.NewRegistry(), Now: func() time.Time { return now },
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	s := r.Pass(ctx)
	ts, _, err := bootstraptoken.ReadTokens(ctx, st, testCluster)
	if err != nil {
		t.Fatal(err)
	}
	if ts.Current.Token == old || !ts.Current.Created.Equal(now) || len(ts.Previous) != 0 {
		t.Fatalf("after the pass: %+v", ts)
	}
	if bt := s.BootstrapToken; bt == nil || bt.Current != ts.Current.Token.ID || len(bt.Valid) != 1 || !bt.LastRotation.Equal(now) || !strings.Contains(bt.Decision, "expired") {
		t.Errorf("token status %+v", s.BootstrapToken)
	}
	if !strings.Contains(logs.String(), "rotated the node bootstrap token") || strings.Contains(logs.String(), ts.Current.Token.Secret) {
		t.Errorf("log:\n%s", logs.String())
	}
}
