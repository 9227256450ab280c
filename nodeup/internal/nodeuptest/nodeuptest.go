// Package nodeuptest has the test harness shared by nodeup's tests: fake
// but well-formed assets served over HTTP on 127.0.0.1, node configurations
// pinning them, a file:// state store, and a recording systemd manager.
package nodeuptest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/file"
	"github.com/kopsnode/agents/pkg/testtools"
	units "github.com/kopsnode/agents/systemd-units"
)

// Asset is one served asset.
type Asset struct {
	Name    string
	Data    []byte
	Extract bool
}

// SHA256 of the asset's bytes.
func (a Asset) SHA256() string {
	s := sha256.Sum256(a.Data)
	return hex.EncodeToString(s[:])
}

// Script is a tiny executable standing in for a binary.
func Script(name string) string { return "#!/bin/sh\n# fake " + name + "\nexec sleep infinity\n" }

// StandardAssets are the assets the model needs, as fakes.
func StandardAssets(t testing.TB, version string) []Asset {
	return []Asset{
		{Name: "kubelet", Data: []byte(Script("kubelet " + version))},
		{Name: "runc", Data: []byte(Script("runc " + version))},
		{Name: "protokube", Data: []byte(Script("protokube " + version))},
		{Name: "etcd-manager", Data: []byte(Script("etcd-manager " + version))},
		// The control plane's, unused on workers.
		{Name: "kube-apiserver", Data: []byte(Script("kube-apiserver " + version))},
		{Name: "kube-controller-manager", Data: []byte(Script("kube-controller-manager " + version))},
		{Name: "kube-scheduler", Data: []byte(Script("kube-scheduler " + version))},
		{Name: "kubectl", Data: []byte(Script("kubectl " + version))},
		{Name: "etcd-3.6.16", Data: []byte(Script("etcd 3.6.16 " + version))},
		{Name: "etcdutl-3.6.16", Data: []byte(Script("etcdutl 3.6.16 " + version))},
		{Name: "containerd", Extract: true, Data: testtools.TarGz(t, map[string]string{
			"bin/containerd":              Script("containerd " + version),
			"bin/containerd-shim-runc-v2": Script("shim " + version),
			"bin/ctr":                     Script("ctr " + version),
		})},
		{Name: "cni-plugins", Extract: true, Data: testtools.TarGz(t, map[string]string{
			"./bridge": Script("bridge"), "./host-local": Script("host-local"),
			"./loopback": Script("loopback"), "./portmap": Script("portmap"),
		})},
	}
}

// Server serves assets at /<name>, counting requests.
type Server struct {
	*httptest.Server
	mu       sync.Mutex // guards assets and corrupt
	assets   map[string][]byte
	corrupt  map[string]bool
	Requests atomic.Int64
}

// NewServer starts a server on 127.0.0.1, closed in t.Cleanup.
func NewServer(t testing.TB, assets []Asset) *Server {
	s := &Server{assets: map[string][]byte{}, corrupt: map[string]bool{}}
	for _, a := range assets {
		s.assets[a.Name] = a.Data
	}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.Requests.Add(1)
		name := strings.TrimPrefix(r.URL.Path, "/")
		s.mu.Lock()
		data, ok := s.assets[name]
		bad := s.corrupt[name]
		s.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		if bad {
			data = append([]byte("corrupted"), data...)
		}
		w.Write(data)
	}))
	t.Cleanup(s.Close)
	return s
}

// Corrupt makes the server serve wrong bytes for an asset.
func (s *Server) Corrupt(name string) {
	s.mu.Lock()
	s.corrupt[name] = true
	s.mu.Unlock()
}

// Set replaces an asset's bytes.
func (s *Server) Set(name string, data []byte) {
	s.mu.Lock()
	s.assets[name] = data
	s.mu.Unlock()
}

// NodeConfig renders a node configuration for role ("control-plane" or
// "node") pinning assets served at each base URL in order.
func NodeConfig(cluster, group, role string, assets []Asset, bases ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: agents.kopsnode.io/v1alpha1\nkind: NodeConfig\nmetadata:\n  name: %s\nspec:\n  clusterName: %s\n  role: %s\n  kubernetesVersion: 1.32.4\n  assets:\n", group, cluster, role)
	for _, a := range assets {
		fmt.Fprintf(&b, "    - name: %s\n      sha256: %s\n      urls:\n", a.Name, a.SHA256())
		for _, base := range bases {
			fmt.Fprintf(&b, "        - %s/%s\n", base, a.Name)
		}
		if a.Extract {
			b.WriteString("      extract: true\n")
		}
	}
	b.WriteString("  kubelet:\n    apiServer: https://127.0.0.1\n  networking:\n    mode: kubenet\n    podCIDR: 100.96.0.0/16\n")
	if role == "control-plane" {
		b.WriteString("  etcdClusters:\n    - name: main\n      members: 1\n      version: 3.6.16\n    - name: events\n      members: 1\n      version: 3.6.16\n")
		b.WriteString("  gossip:\n    seeds: store\n")
	}
	return b.String()
}

// Store makes a file:// store in a temp dir, closed in t.Cleanup.
func Store(t testing.TB) (store.Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := file.New(dir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, "file://" + dir
}

// Put writes an object.
func Put(t testing.TB, s store.Store, key, data string) {
	t.Helper()
	if _, err := s.Put(context.Background(), key, strings.NewReader(data), store.Condition{}); err != nil {
		t.Fatal(err)
	}
}

// Call is one recorded systemd call.
type Call struct{ Op, Unit string }

// Systemd is a recording systemd manager: units become active when started.
type Systemd struct {
	root   string
	mu     sync.Mutex // guards calls and active
	calls  []Call
	active map[string]bool
}

// NewSystemd returns an empty recorder acting on root: Enable creates the
// [Install] symlinks there, as systemd does.
func NewSystemd(root string) *Systemd { return &Systemd{root: root, active: map[string]bool{}} }

func (s *Systemd) rec(op, unit string) {
	s.mu.Lock()
	s.calls = append(s.calls, Call{op, unit})
	s.mu.Unlock()
}

// Calls returns and clears the recorded calls (ActiveState excluded).
func (s *Systemd) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls
	s.calls = nil
	return c
}

// Changing returns the recorded calls of one kind, sorted by unit.
func Changing(calls []Call, op string) []string {
	var out []string
	for _, c := range calls {
		if c.Op == op {
			out = append(out, c.Unit)
		}
	}
	sort.Strings(out)
	return out
}

func (s *Systemd) ActiveState(ctx context.Context, unit string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active[unit] {
		return "active", nil
	}
	return "inactive", nil
}
func (s *Systemd) DaemonReload(ctx context.Context) error { s.rec("daemon-reload", ""); return nil }
func (s *Systemd) Enable(ctx context.Context, unit string) error {
	s.rec("enable", unit)
	b, err := os.ReadFile(filepath.Join(s.root, units.Dir, unit))
	if err != nil {
		return fmt.Errorf("enabling %s: %w", unit, err)
	}
	for _, l := range units.EnableLinks(unit, string(b)) {
		p := filepath.Join(s.root, l.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		os.Remove(p)
		if err := os.Symlink(l.Target, p); err != nil {
			return err
		}
	}
	return nil
}
func (s *Systemd) Start(ctx context.Context, unit string) error {
	s.rec("start", unit)
	s.mu.Lock()
	s.active[unit] = true
	s.mu.Unlock()
	return nil
}
func (s *Systemd) Restart(ctx context.Context, unit string) error {
	s.rec("restart", unit)
	return nil
}
func (s *Systemd) Close() error { return nil }

// Snapshot records every path under dir with its mode and content hash, to
// prove a dry run changed nothing.
func Snapshot(t testing.TB, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		v := fi.Mode().String()
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(b)
			v += " " + hex.EncodeToString(s[:]) + " " + fi.ModTime().String()
		}
		m[p] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Runner records commands instead of running them; Fail makes them fail.
type Runner struct {
	mu   sync.Mutex // guards cmds
	cmds []string
	Fail func(cmd string) error
}

func (r *Runner) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := strings.Join(append([]string{name}, args...), " ")
	r.mu.Lock()
	r.cmds = append(r.cmds, cmd)
	r.mu.Unlock()
	if r.Fail != nil {
		if err := r.Fail(cmd); err != nil {
			return []byte(err.Error()), err
		}
	}
	return nil, nil
}

// Commands returns the recorded commands.
func (r *Runner) Commands() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.cmds...)
}
