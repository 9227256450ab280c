package gossipd

import (
	"bytes"
	"context"
	"crypto/rand"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kopsnode/agents/gossip/membership"
	"github.com/kopsnode/agents/pkg/cli"
	"github.com/kopsnode/agents/pkg/store/file"
	"github.com/kopsnode/agents/protokube/gossipkeys"
	"github.com/kopsnode/agents/protokube/podnet"
)

const startCluster = "start.k8s.local"

// runGossip runs `protokube gossip` through the real command with flags for
// a loopback node, returning its exit code and stderr. A panic fails the
// test with its value instead of crashing the test binary.
func runGossip(t *testing.T, ctx context.Context, storeDir string, extra ...string) (code int, stderr string) {
	t.Helper()
	args := append([]string{"gossip", "--cluster=" + startCluster, "--store=file://" + storeDir, "--node-name=n1",
		"--bind=127.0.0.1:0", "--dns-listen=", "--hosts-file=", "--status-listen=127.0.0.1:0", "--keyring-wait=50ms", "--test-timings"}, extra...)
	var out, errb syncBuffer
	app := &cli.App{Name: "protokube", Commands: []*cli.Command{GossipCommand()}}
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("protokube %s panicked: %v\nstderr:\n%s", strings.Join(args, " "), r, errb.String())
		}
	}()
	code = app.Run(ctx, &cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader("")}, args)
	return code, errb.String()
}

// syncBuffer is a bytes.Buffer safe for the daemon's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Every start error ends the command with exit 1 and a logged error that
// names the cause; none panics. (A keyring that does not parse used to
// panic on a nil daemon and hide its own error.)
func TestGossipStartErrorsAreReported(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	cases := []struct {
		name  string
		setup func(t *testing.T, dir string)
		flags []string
		want  []string
	}{
		{
			name: "keyring that does not parse",
			setup: func(t *testing.T, dir string) {
				os.MkdirAll(filepath.Join(dir, startCluster, "secrets"), 0o755)
				os.WriteFile(filepath.Join(dir, startCluster, "secrets", "gossip-keys"), []byte("primary: [not, a, key]\n"), 0o600)
			},
			want: []string{"gossip did not start", "starting gossip membership", startCluster + "/secrets/gossip-keys"},
		},
		{
			name:  "status port taken",
			setup: writeKeyring,
			flags: []string{"--status-listen=" + busy.Addr().String()},
			want:  []string{"gossip did not start", "--status-listen", busy.Addr().String()},
		},
		{
			name:  "store directory missing",
			setup: func(t *testing.T, dir string) { os.RemoveAll(dir) },
			want:  []string{"gossip did not start", "reading the gossip keyring", "bucket not found"},
		},
		{
			name:  "pod network flags incomplete",
			setup: writeKeyring,
			flags: []string{"--pod-network=kubenet", "--cluster-pod-cidr=100.96.0.0/11"},
			want:  []string{"--non-masquerade-cidr: required"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			c.setup(t, dir)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			code, stderr := runGossip(t, ctx, dir, c.flags...)
			if code == 0 {
				t.Fatalf("exit 0; stderr:\n%s", stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}

func writeKeyring(t *testing.T, dir string) {
	t.Helper()
	st, err := file.New(dir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gossipkeys.ForCluster(st, startCluster).Create(context.Background(), rand.Reader); err != nil {
		t.Fatal(err)
	}
}

// A worker (no --create-keyring) never creates the keyring: it waits,
// saying what for, and starts once a control-plane node has created it.
// Stopped while waiting, it exits cleanly.
func TestWorkerWaitsForTheKeyring(t *testing.T) {
	dir := t.TempDir()
	st, err := file.New(dir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	cfg := DefaultConfig()
	cfg.Cluster, cfg.Store.URL, cfg.NodeName = startCluster, "file://"+dir, "worker"
	cfg.Bind, cfg.DNSListen, cfg.HostsFile, cfg.StatusAddr = "127.0.0.1:0", "", "", "127.0.0.1:0"
	cfg.KeyringWait, cfg.Fast = 50*time.Millisecond, true
	type result struct {
		d   *Daemon
		err error
	}
	done := make(chan result, 1)
	go func() {
		d, err := Start(context.Background(), cfg, Deps{Store: st, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		done <- result{d, err}
	}()
	eventually(t, 5*time.Second, "the worker says it waits for the keyring", func() error {
		if !strings.Contains(logs.String(), "waiting for the gossip keyring") || !strings.Contains(logs.String(), startCluster+"/secrets/gossip-keys") {
			return os.ErrNotExist
		}
		return nil
	})
	select {
	case r := <-done:
		t.Fatalf("started without a keyring: %v", r.err)
	default:
	}
	if _, err := st.Stat(context.Background(), membership.KeysObject(startCluster)); err == nil {
		t.Fatal("the worker created the keyring")
	}
	writeKeyring(t, dir) // what the first control-plane node does
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("worker did not start once the keyring existed: %v", r.err)
		}
		r.d.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("worker still waiting after the keyring appeared")
	}

	// Stopped while waiting: the command exits 0.
	empty := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	code, stderr := runGossip(t, ctx, empty)
	if code != 0 || !strings.Contains(stderr, "waiting for the gossip keyring") {
		t.Fatalf("stopped while waiting: exit %d\n%s", code, stderr)
	}
}

// A control-plane node (--create-keyring) creates the keyring when there is
// none, and a second one leaves it unchanged.
func TestControlPlaneCreatesTheKeyring(t *testing.T) {
	dir := t.TempDir()
	st, err := file.New(dir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	start := func(name string) *Daemon {
		cfg := DefaultConfig()
		cfg.Cluster, cfg.Store.URL, cfg.NodeName, cfg.CreateKeyring = startCluster, "file://"+dir, name, true
		cfg.Bind, cfg.DNSListen, cfg.HostsFile, cfg.StatusAddr = "127.0.0.1:0", "", "", "127.0.0.1:0"
		cfg.Fast = true
		d, err := Start(context.Background(), cfg, Deps{Store: st})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	start("cp1")
	kr := gossipkeys.ForCluster(st, startCluster)
	first, err := kr.Show(context.Background())
	if err != nil {
		t.Fatalf("no keyring after the first control-plane node: %v", err)
	}
	start("cp2")
	second, err := kr.Show(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if first.Primary != second.Primary || second.NumKeys != 1 {
		t.Fatalf("the second control-plane node changed the keyring: %+v then %+v", first, second)
	}
}

// The human status shows the pod network: range, routes, waiting reason.
func TestPrintStatusPodNetwork(t *testing.T) {
	var b bytes.Buffer
	st := Status{Node: "a", PodNet: &podnet.Status{Node: "a", Via: "10.0.0.1", Syncs: 3,
		Routes: []podnet.Route{{Dst: netip.MustParsePrefix("100.96.2.0/24"), Via: netip.MustParseAddr("10.0.0.2"), Owner: "b"}},
		Errors: map[string]string{"node": "no pod range allocated yet: Node a is not registered"}}}
	if err := PrintStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"POD NETWORK node a, range (not allocated yet) via 10.0.0.1", "100.96.2.0/24  10.0.0.2  b", "node: no pod range allocated yet"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
}
