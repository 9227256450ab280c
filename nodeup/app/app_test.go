package app

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/internal/nodeuptest"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/file"
)

type fixture struct {
	t       testing.TB
	root    string
	store   store.Store
	url     string
	srv     *nodeuptest.Server
	assets  []nodeuptest.Asset
	cfg     string
	systemd *nodeuptest.Systemd
	runner  *nodeuptest.Runner
}

func newFixture(t *testing.T, role string) *fixture {
	root := t.TempDir()
	f := &fixture{t: t, root: root, systemd: nodeuptest.NewSystemd(root), runner: &nodeuptest.Runner{}}
	f.assets = nodeuptest.StandardAssets(t, "v1")
	f.srv = nodeuptest.NewServer(t, f.assets)
	f.store, f.url = nodeuptest.Store(t)
	f.cfg = nodeuptest.NodeConfig("test.k8s.local", "g1", role, f.assets, f.srv.URL)
	nodeuptest.Put(t, f.store, ConfigKey("test.k8s.local", "g1"), f.cfg)
	// Workers join a cluster whose control plane published the kubernetes
	// CA's certificate and the bootstrap token.
	nodeuptest.SeedControlPlane(t, f.store, "test.k8s.local")
	return f
}

func (f *fixture) opts() Options {
	return Options{
		BootConfig: BootConfig{Store: f.url, Cluster: "test.k8s.local", Group: "g1", ConfigHash: config.FileHash([]byte(f.cfg)), Root: f.root},
		OpenStore: func(ctx context.Context, bc BootConfig) (store.Store, error) {
			return file.New(strings.TrimPrefix(bc.Store, "file://"), file.Options{})
		},
		Systemd:      f.systemd,
		Exec:         f.runner,
		Hostname:     "node-1",
		Engine:       engine.Options{Backoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, TaskTimeout: 5 * time.Second},
		StoreTimeout: 2 * time.Second,
	}
}

func (f *fixture) apply(o Options) (*Status, string) {
	f.t.Helper()
	var out bytes.Buffer
	o.Out = &out
	st, err := Apply(context.Background(), o)
	if err != nil {
		f.t.Fatalf("apply: %v\n%s", err, out.String())
	}
	return st, out.String()
}

func (f *fixture) read(p string) string {
	b, err := os.ReadFile(filepath.Join(f.root, p))
	if err != nil {
		f.t.Fatal(err)
	}
	return string(b)
}

func TestApplyConvergesAndRerunChangesNothing(t *testing.T) {
	f := newFixture(t, "control-plane")
	st, _ := f.apply(f.opts())
	if st.Result != "converged" {
		t.Fatalf("status = %+v", st)
	}
	calls := f.systemd.Calls()
	started := nodeuptest.Changing(calls, "start")
	want := []string{"containerd.service", "kube-apiserver.service", "kube-controller-manager.service", "kube-scheduler.service", "kubelet.service", "protokube-etcd-volumes.service", "protokube-manifests.service", "protokube.service"}
	if strings.Join(started, ",") != strings.Join(want, ",") {
		t.Fatalf("started %v, want %v", started, want)
	}
	if r := nodeuptest.Changing(calls, "restart"); len(r) != 0 {
		t.Fatalf("first run restarted %v", r)
	}
	for _, p := range []string{"/usr/local/bin/kubelet", "/usr/local/bin/containerd", "/usr/local/sbin/runc", "/opt/cni/bin/bridge", "/etc/containerd/config.toml", "/var/lib/kubelet/kubeconfig", "/etc/systemd/system/kubelet.service", "/etc/systemd/system/multi-user.target.wants/kubelet.service", "/etc/sysctl.d/99-kubernetes.conf",
		"/etc/kubernetes/admin.conf", "/etc/kubernetes/pki/apiserver.crt", "/etc/kubernetes/pki/sa.key", "/opt/etcd/v3.6.16/etcd", "/usr/local/bin/kube-apiserver"} {
		if _, err := os.Lstat(filepath.Join(f.root, p)); err != nil {
			t.Errorf("missing %s: %v", p, err)
		}
	}
	if !strings.Contains(f.read("/var/lib/kubelet/kubeconfig"), "client-certificate-data") {
		t.Error("kubeconfig has no client certificate")
	}
	before := nodeuptest.Snapshot(t, f.root)
	requests := f.srv.Requests.Load()

	st2, out := f.apply(f.opts())
	calls = f.systemd.Calls()
	if len(calls) != 0 {
		t.Fatalf("second run made systemd calls %v", calls)
	}
	for _, r := range st2.Tasks {
		if r.Status != engine.StatusUnchanged {
			t.Errorf("second run: %s %s: %s", r.ID, r.Status, r.Plan)
		}
	}
	if out != "" {
		t.Errorf("second run reported changes: %s", out)
	}
	if f.srv.Requests.Load() != requests {
		t.Error("second run downloaded again")
	}
	after := nodeuptest.Snapshot(t, f.root)
	for p, v := range before {
		if p == filepath.Join(f.root, StatusPath) {
			continue
		}
		if after[p] != v {
			t.Errorf("second run changed %s", p)
		}
	}
}

func TestChangedConfigRestartsOnlyItsService(t *testing.T) {
	f := newFixture(t, "control-plane")
	f.apply(f.opts())
	f.systemd.Calls()

	// The operator changes the kubelet's maxPods in the store.
	f.cfg = strings.Replace(f.cfg, "  kubelet:\n", "  kubelet:\n    maxPods: 42\n", 1)
	nodeuptest.Put(t, f.store, ConfigKey("test.k8s.local", "g1"), f.cfg)
	o := f.opts()
	o.ConfigHash = "0000000000000000000000000000000000000000000000000000000000000000"
	o.FollowUpdates = true
	f.apply(o)
	calls := f.systemd.Calls()
	if r := nodeuptest.Changing(calls, "restart"); strings.Join(r, ",") != "kubelet.service" {
		t.Fatalf("restarted %v, want only kubelet.service (calls %v)", r, calls)
	}
	if s := nodeuptest.Changing(calls, "start"); len(s) != 0 {
		t.Fatalf("started %v", s)
	}
	if !strings.Contains(f.read("/var/lib/kubelet/config.yaml"), "maxPods: 42") {
		t.Fatal("config not updated")
	}
}

func TestRestartOwedAfterCrashIsStillDone(t *testing.T) {
	f := newFixture(t, "node")
	f.apply(f.opts())
	f.systemd.Calls()
	// A previous run wrote the new containerd config and crashed before
	// restarting: simulate by editing the file behind nodeup's back and
	// leaving the state file as it was. The wanted content is the old one,
	// so nodeup rewrites it; the running containerd saw neither change...
	// The real case: the file already has the wanted content, but the state
	// says containerd was started with other content.
	cfgPath := filepath.Join(f.root, "/etc/containerd/config.toml")
	stPath := filepath.Join(f.root, "/var/lib/nodeup/state.json")
	b, _ := os.ReadFile(stPath)
	b = bytes.Replace(b, []byte(`"/etc/containerd/config.toml": "`), []byte(`"/etc/containerd/config.toml": "x`), 1)
	if err := os.WriteFile(stPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cfgPath); err != nil {
		t.Fatal(err)
	}
	f.apply(f.opts())
	if r := nodeuptest.Changing(f.systemd.Calls(), "restart"); strings.Join(r, ",") != "containerd.service" {
		t.Fatalf("restarted %v, want containerd.service", r)
	}
	f.apply(f.opts())
	if c := f.systemd.Calls(); len(c) != 0 {
		t.Fatalf("third run made calls %v", c)
	}
}

func TestDryRunHasNoSideEffects(t *testing.T) {
	f := newFixture(t, "control-plane")
	o := f.opts()
	o.DryRun = true
	before := nodeuptest.Snapshot(t, f.root)
	storeBefore, _ := f.store.List(context.Background(), "")
	_, out := f.apply(o)
	if after := nodeuptest.Snapshot(t, f.root); len(after) != len(before) {
		t.Fatalf("dry run wrote files: %v", after)
	}
	if c := f.systemd.Calls(); len(c) != 0 {
		t.Fatalf("dry run called systemd: %v", c)
	}
	if c := f.runner.Commands(); len(c) != 0 {
		t.Fatalf("dry run ran commands: %v", c)
	}
	if f.srv.Requests.Load() != 0 {
		t.Fatal("dry run downloaded")
	}
	storeAfter, _ := f.store.List(context.Background(), "")
	if len(storeAfter) != len(storeBefore) {
		t.Fatalf("dry run wrote to the store: %v", storeAfter)
	}
	for _, want := range []string{
		"download " + f.srv.URL + "/kubelet -> /var/cache/nodeup/assets/",
		"+++ /etc/containerd/config.toml (wanted)",
		"+SystemdCgroup = true",
		"start kubelet.service",
		"issue client certificate CN=system:node:node-1",
		"symlink /etc/systemd/system/multi-user.target.wants/kubelet.service",
	} {
		if !strings.Contains(strings.ReplaceAll(out, "  SystemdCgroup", "SystemdCgroup"), want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}

	// On a converged root, a change in the store plans exactly the file
	// diff and the restart.
	f.apply(f.opts())
	f.systemd.Calls()
	f.cfg = strings.Replace(f.cfg, "  kubelet:\n", "  kubelet:\n    maxPods: 42\n", 1)
	nodeuptest.Put(t, f.store, ConfigKey("test.k8s.local", "g1"), f.cfg)
	o = f.opts()
	o.ConfigHash = config.FileHash([]byte(f.cfg))
	o.DryRun = true
	_, out = f.apply(o)
	if c := f.systemd.Calls(); len(c) != 0 {
		t.Fatalf("dry run called systemd: %v", c)
	}
	for _, want := range []string{"~ file:/var/lib/kubelet/config.yaml", "-maxPods: 110", "+maxPods: 42", "restart kubelet.service"} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "containerd.service") {
		t.Errorf("plan touches containerd:\n%s", out)
	}
}

func TestHashMismatchIsRefusedWithBothHashes(t *testing.T) {
	f := newFixture(t, "node")
	o := f.opts()
	pinned := strings.Repeat("ab", 32)
	o.ConfigHash = pinned
	st, err := Apply(context.Background(), o)
	var hm *HashMismatchError
	if !errors.As(err, &hm) {
		t.Fatalf("err = %v", err)
	}
	actual := config.FileHash([]byte(f.cfg))
	if !strings.Contains(err.Error(), pinned) || !strings.Contains(err.Error(), actual) {
		t.Fatalf("error lacks a hash: %v", err)
	}
	if st.Result != "failed" {
		t.Fatalf("status %+v", st)
	}
	// The status file tells the operator why.
	var out bytes.Buffer
	app := NewApp(nil)
	code := app.Run(context.Background(), cliEnv(&out), []string{"status", "--root", f.root})
	if code != 1 || !strings.Contains(out.String(), pinned) {
		t.Fatalf("status exit %d:\n%s", code, out.String())
	}
	if _, err := os.Stat(filepath.Join(f.root, "/usr/local/bin/kubelet")); err == nil {
		t.Fatal("refused configuration was applied")
	}
}

func TestMissingConfigAndInvalidConfigNameTheThing(t *testing.T) {
	f := newFixture(t, "node")
	o := f.opts()
	o.Group = "nope"
	_, err := Apply(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "test.k8s.local/nodeup/nope.yaml") || !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing: err = %v", err)
	}
	nodeuptest.Put(t, f.store, ConfigKey("test.k8s.local", "bad"), "apiVersion: agents.kopsnode.io/v1alpha1\nkind: NodeConfig\nmetadata:\n  name: bad\nspec:\n  role: boss\n")
	o.Group, o.ConfigHash = "bad", ""
	_, err = Apply(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "spec.role") || !strings.Contains(err.Error(), "bad.yaml") {
		t.Fatalf("invalid: err = %v", err)
	}
	o.Store = ""
	if _, err = Apply(context.Background(), o); err == nil || !strings.Contains(err.Error(), "--store") {
		t.Fatalf("no store: err = %v", err)
	}
}

func TestDeadMirrorAndCorruptMirror(t *testing.T) {
	f := newFixture(t, "node")
	good := nodeuptest.NewServer(t, f.assets)
	f.srv.Corrupt("kubelet")
	dead := "http://127.0.0.1:1"
	f.cfg = nodeuptest.NodeConfig("test.k8s.local", "g1", "node", f.assets, dead, f.srv.URL, good.URL)
	nodeuptest.Put(t, f.store, ConfigKey("test.k8s.local", "g1"), f.cfg)
	o := f.opts()
	o.ConfigHash = config.FileHash([]byte(f.cfg))
	st, _ := f.apply(o)
	if st.Result != "converged" {
		t.Fatalf("%+v", st)
	}
	want := nodeuptest.StandardAssets(t, "v1")[0]
	if got := f.read("/usr/local/bin/kubelet"); got != string(want.Data) {
		t.Fatalf("kubelet = %q", got)
	}
}

func TestAllMirrorsCorruptFailsWithURLAndHashes(t *testing.T) {
	f := newFixture(t, "node")
	f.srv.Corrupt("kubelet")
	st, err := Apply(context.Background(), f.opts())
	if err == nil {
		t.Fatal("no error")
	}
	var failed *engine.Result
	for i := range st.Tasks {
		if st.Tasks[i].ID == "asset:kubelet" {
			failed = &st.Tasks[i]
		}
	}
	if failed == nil || failed.Status != engine.StatusFailed {
		t.Fatalf("asset:kubelet = %+v", failed)
	}
	exp := f.assets[0].SHA256()
	if !strings.Contains(failed.Error, f.srv.URL+"/kubelet") || !strings.Contains(failed.Error, "expected "+exp) || !strings.Contains(failed.Error, "got ") {
		t.Fatalf("error = %s", failed.Error)
	}
	// Nothing points at a missing binary: the kubelet unit was skipped.
	if _, err := os.Stat(filepath.Join(f.root, "/etc/systemd/system/kubelet.service")); err == nil {
		t.Fatal("kubelet.service written without its binary")
	}
	if st.Tasks[0].Status != engine.StatusFailed {
		t.Fatalf("status does not list the failed task first: %+v", st.Tasks[0])
	}
	if _, err := os.Stat(filepath.Join(f.root, "/var/cache/nodeup/assets", exp)); err == nil {
		t.Fatal("corrupt download left in the cache")
	}
}

func TestOfflineRootEnablesBySymlinkAndSkipsStart(t *testing.T) {
	f := newFixture(t, "node")
	o := f.opts()
	o.Systemd = nil
	st, _ := f.apply(o)
	if st.Result != "converged" {
		t.Fatal(st.Error)
	}
	link, err := os.Readlink(filepath.Join(f.root, "/etc/systemd/system/multi-user.target.wants/containerd.service"))
	if err != nil || link != "/etc/systemd/system/containerd.service" {
		t.Fatalf("link = %q, %v", link, err)
	}
	var plan string
	for _, r := range st.Tasks {
		if r.ID == "unit:kubelet.service" {
			plan = r.Plan
		}
	}
	if !strings.Contains(plan, "skipped") {
		t.Fatalf("kubelet plan does not say start was skipped: %q", plan)
	}
	// Second offline run: converged.
	st, _ = f.apply(o)
	for _, r := range st.Tasks {
		if r.Status != engine.StatusUnchanged {
			t.Errorf("%s %s", r.ID, r.Status)
		}
	}
}

func TestBakeThenBootPhases(t *testing.T) {
	f := newFixture(t, "node")
	o := f.opts()
	o.Phase = "bake"
	st, _ := f.apply(o)
	if len(st.Phases) != 1 || st.Phases[0].Phase != engine.PhaseBake {
		t.Fatalf("phases %+v", st.Phases)
	}
	if _, err := os.Stat(filepath.Join(f.root, "/usr/local/bin/kubelet")); err == nil {
		t.Fatal("bake installed the kubelet")
	}
	n := f.srv.Requests.Load()
	o.Phase = "boot"
	st, _ = f.apply(o)
	if f.srv.Requests.Load() != n {
		t.Fatal("boot phase downloaded")
	}
	if f.read("/usr/local/bin/kubelet") == "" {
		t.Fatal("boot did not install the kubelet")
	}
	if len(st.Phases) != 1 || st.Phases[0].Phase != engine.PhaseBoot {
		t.Fatalf("phases %+v", st.Phases)
	}
}

type flakyStore struct {
	store.Store
	fails int
	calls int
}

func (s *flakyStore) Open(ctx context.Context, key string) (io.ReadCloser, store.Info, error) {
	s.calls++
	if s.calls <= s.fails {
		return nil, store.Info{}, &store.Error{Op: "open", URL: s.URL() + "/" + key, Err: errors.New("connection refused")}
	}
	return s.Store.Open(ctx, key)
}

func TestUnreachableStoreIsRetriedThenNamed(t *testing.T) {
	f := newFixture(t, "node")
	fs := &flakyStore{fails: 2}
	o := f.opts()
	o.OpenStore = func(ctx context.Context, bc BootConfig) (store.Store, error) {
		s, err := file.New(strings.TrimPrefix(bc.Store, "file://"), file.Options{})
		fs.Store = s
		return fs, err
	}
	if _, err := Apply(context.Background(), o); err != nil {
		t.Fatalf("flaky store: %v", err)
	}
	fs.fails, fs.calls = 1000, 0
	o.StoreTimeout = 300 * time.Millisecond
	_, err := Apply(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "test.k8s.local/nodeup/g1.yaml") || fs.calls < 2 {
		t.Fatalf("err = %v after %d calls", err, fs.calls)
	}
}

func TestBucketAssetURLsReadThroughTheStoreOpener(t *testing.T) {
	f := newFixture(t, "node")
	// An "s3://assets" bucket backed by a directory: the opener gets the
	// bucket URL with the run's endpoint settings.
	bucketDir := t.TempDir()
	bucket, err := file.New(bucketDir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bucket.Close() })
	for _, a := range f.assets {
		nodeuptest.Put(t, bucket, "kopsnode/v1/"+a.Name, string(a.Data))
	}
	f.cfg = nodeuptest.NodeConfig("test.k8s.local", "g1", "node", f.assets, "s3://assets/kopsnode/v1")
	nodeuptest.Put(t, f.store, ConfigKey("test.k8s.local", "g1"), f.cfg)
	o := f.opts()
	o.ConfigHash = config.FileHash([]byte(f.cfg))
	o.StoreEndpoint = "http://127.0.0.1:9"
	var opened []string
	o.OpenStore = func(ctx context.Context, bc BootConfig) (store.Store, error) {
		opened = append(opened, bc.Store+" "+bc.StoreEndpoint)
		if bc.Store == "s3://assets" {
			return file.New(bucketDir, file.Options{})
		}
		return file.New(strings.TrimPrefix(bc.Store, "file://"), file.Options{})
	}
	o.Engine.Workers = 1
	st, _ := f.apply(o)
	if st.Result != "converged" {
		t.Fatal(st.Error)
	}
	if f.read("/usr/local/bin/kubelet") != string(f.assets[0].Data) {
		t.Fatal("kubelet not installed from the bucket")
	}
	if !strings.Contains(strings.Join(opened, ","), "s3://assets http://127.0.0.1:9") {
		t.Fatalf("opened %v", opened)
	}
}
