package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/nodeup/model"
	"github.com/kopsnode/agents/nodeup/tasks"
	s3store "github.com/kopsnode/agents/pkg/store/s3"
)

// clusterBoot says what bootCluster boots.
type clusterBoot struct {
	// ControlPlanes is the number of control-plane machines (each with an
	// etcd member of main and events); Workers the number of workers.
	ControlPlanes, Workers int
	// Baked boots the machines as from a node image baked for their group
	// (images/bake.sh): nodeup installed and its asset cache filled, so
	// nothing is downloaded at boot. Otherwise they download nodeup and
	// every asset from the mirror, as from a plain OS image.
	Baked bool
	// Together boots the workers right after the control-plane machines,
	// before the API answers, as a cloud launches every instance group at
	// once: render has already written the CA and the bootstrap token a
	// worker needs, so it converges while the control plane forms and its
	// kubelet joins once the API answers. Otherwise the workers are
	// booted once the API answers.
	Together bool
}

// bootedCluster is what bootCluster booted, and when (host clock).
type bootedCluster struct {
	ControlPlanes, Workers []*clusterMachine
	// APIReady is when the first control-plane machine's /readyz first
	// answered ok, asked from the host over the machine network with the
	// admin kubeconfig.
	APIReady time.Time
	// NodeReady is when each node was first seen Ready from the host.
	NodeReady map[string]time.Time
}

// bootWait bounds each of bootCluster's waits (the API, the nodes).
const bootWait = 6 * time.Minute

// bootCluster renders the cluster into the store with nodeup render (over
// a mirror of the parts make tools built), boots the control-plane machines, waits
// until the API answers (on the first one, through kubectl on the machine
// and from the host), then boots the workers and waits until every node is
// Ready. The test, the boot benchmark and the demo share it.
func (c *clusterFixture) bootCluster(spec clusterBoot) *bootedCluster {
	t := c.t
	t.Helper()
	if spec.ControlPlanes < 1 || spec.Workers < 0 || spec.ControlPlanes+spec.Workers > len(c.nw.Hosts)-c.nextHost {
		t.Fatalf("bootCluster: %d control-plane machines and %d workers do not fit the %d free hosts of the network",
			spec.ControlPlanes, spec.Workers, len(c.nw.Hosts)-c.nextHost)
	}
	rendered := c.renderCluster(spec.ControlPlanes)
	if spec.Baked {
		c.bake(rendered.Hashes)
	}
	servedBefore := c.mirror.requests.Load()

	bc := &bootedCluster{}
	for i := 0; i < spec.ControlPlanes; i++ {
		bc.ControlPlanes = append(bc.ControlPlanes, c.boot(fmt.Sprintf("cp-%d", i), "control-plane", rendered.Userdata["control-plane"], []string{"main", "events"}))
	}
	cp := bc.ControlPlanes[0]
	watch := c.watchAPI(cp)
	defer watch.stop()
	bootWorkers := func() {
		for i := 0; i < spec.Workers; i++ {
			bc.Workers = append(bc.Workers, c.boot(fmt.Sprintf("node-%d", i), "nodes", rendered.Userdata["nodes"], nil))
		}
	}
	if spec.Together {
		bootWorkers()
	}
	c.waitAPI(cp, bootWait)
	bc.APIReady = watch.waitAPI(time.Minute)
	t.Logf("API answers %s after %s started", c.sinceStart(cp, bc.APIReady), cp.Name())
	if !spec.Together {
		bootWorkers()
	}

	names := []string{}
	for _, m := range append(slices.Clone(bc.ControlPlanes), bc.Workers...) {
		names = append(names, m.Name())
	}
	c.waitNodesReady(cp, names, bootWait)
	bc.NodeReady = watch.waitNodes(names, time.Minute)
	t.Logf("all %d nodes Ready %s after %s started", len(names), c.sinceStart(cp, latest(bc.NodeReady)), cp.Name())
	if spec.Baked {
		if n := c.mirror.requests.Load() - servedBefore; n != 0 {
			t.Errorf("machines booted from baked images made %d requests to the release mirror; the baked cache should have served every asset", n)
		}
	}
	return bc
}

// sinceStart formats how long after a machine's start t was, for logs.
func (c *clusterFixture) sinceStart(m *clusterMachine, t time.Time) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start, err := machineStarted(ctx, m)
	if err != nil {
		return "(start unknown: " + err.Error() + ")"
	}
	return t.Sub(start).Round(100 * time.Millisecond).String()
}

func latest(ts map[string]time.Time) time.Time {
	var l time.Time
	for _, t := range ts {
		if t.After(l) {
			l = t
		}
	}
	return l
}

// bake fills one asset cache per instance group on the host with nodeup's
// own bake phase (`nodeup apply --phase bake --root DIR`, as
// images/bake.sh runs it for an image), downloading from the mirror and
// verifying every asset. Machines of the group get the cache bound at
// tasks.CacheDir and nodeup installed, as if booted from that image; the
// directory is on the host's disk so a machine boots without copying the
// cache into its overlay first.
func (c *clusterFixture) bake(hashes map[string]string) {
	t := c.t
	t.Helper()
	if c.baked == nil {
		c.baked = map[string]string{}
	}
	for group, hash := range hashes {
		root := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		cmd := exec.CommandContext(ctx, c.nodeupB, "apply", "--phase", "bake", "--root", root,
			"--store", c.storeURL(), "--store-endpoint", c.minio.Endpoint, "--store-region", c.minio.Region, "--store-path-style",
			"--cluster", clusterName, "--group", group, "--config-hash", hash)
		cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+c.minio.AccessKey, "AWS_SECRET_ACCESS_KEY="+c.minio.SecretKey, "AWS_REGION="+c.minio.Region)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("baking the asset cache of group %s: nodeup apply --phase bake: %v\n%s", group, err, out)
		}
		cache := filepath.Join(root, tasks.CacheDir)
		entries, err := os.ReadDir(cache)
		if err != nil || len(entries) == 0 {
			t.Fatalf("baking group %s left no asset cache at %s: %v\n%s", group, cache, err, out)
		}
		t.Logf("baked the asset cache of group %s (%d entries) in %s", group, len(entries), time.Since(start).Round(100*time.Millisecond))
		c.baked[group] = cache
	}
}

// hostAPIServer is the API server of a control-plane machine as the host
// reaches it: the machine's address on the network, which the API serving
// certificate carries.
func hostAPIServer(cm *clusterMachine) string {
	return "https://" + net.JoinHostPort(cm.host.Addr.String(), strconv.Itoa(model.APIServerPort))
}

// hostKubeconfig is the admin kubeconfig nodeup wrote on a control-plane
// machine, with its server rewritten to hostAPIServer.
func hostKubeconfig(cm *clusterMachine) (*clientcmdapi.Config, error) {
	p := model.AdminKubeconfig
	data, err := os.ReadFile(cm.HostPath(p))
	if err != nil {
		return nil, fmt.Errorf("reading %s of machine %s: %w", p, cm.Name(), err)
	}
	cfg, err := clientcmd.Load(data)
	if err != nil {
		return nil, fmt.Errorf("parsing %s of machine %s: %w", p, cm.Name(), err)
	}
	if len(cfg.Clusters) == 0 {
		return nil, fmt.Errorf("%s of machine %s names no cluster", p, cm.Name())
	}
	for _, cl := range cfg.Clusters {
		cl.Server = hostAPIServer(cm)
	}
	return cfg, nil
}

// apiWatch polls a control-plane machine's API server from the host for
// the first /readyz ok and each node's first Ready, so timings do not
// depend on the cost of a kubectl run inside a machine.
type apiWatch struct {
	t    testing.TB
	stop func() // ends the poller and waits for it; safe to call twice

	mu        sync.Mutex // guards the fields below
	apiReady  time.Time
	nodeReady map[string]time.Time
	lastErr   string
}

// apiPollInterval bounds how late the watch sees a change.
const apiPollInterval = 200 * time.Millisecond

// watchAPI starts polling cm's API server from the host until stop is
// called (also at cleanup).
func (c *clusterFixture) watchAPI(cm *clusterMachine) *apiWatch {
	w := &apiWatch{t: c.t, nodeReady: map[string]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var once sync.Once
	w.stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	c.t.Cleanup(w.stop)
	go func() {
		defer close(done)
		var cs *kubernetes.Clientset
		tick := time.NewTicker(apiPollInterval)
		defer tick.Stop()
		for {
			if err := w.poll(ctx, cm, &cs); err != nil {
				w.mu.Lock()
				w.lastErr = err.Error()
				w.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

func (w *apiWatch) poll(ctx context.Context, cm *clusterMachine, cs **kubernetes.Clientset) error {
	if *cs == nil {
		kc, err := hostKubeconfig(cm)
		if err != nil {
			return err
		}
		rc, err := clientcmd.NewDefaultClientConfig(*kc, nil).ClientConfig()
		if err != nil {
			return fmt.Errorf("admin kubeconfig of %s: %w", cm.Name(), err)
		}
		rc.Timeout = 5 * time.Second
		if *cs, err = kubernetes.NewForConfig(rc); err != nil {
			return fmt.Errorf("admin kubeconfig of %s: %w", cm.Name(), err)
		}
	}
	w.mu.Lock()
	ready := !w.apiReady.IsZero()
	w.mu.Unlock()
	if !ready {
		body, err := (*cs).Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil || strings.TrimSpace(string(body)) != "ok" {
			return fmt.Errorf("GET %s/readyz: %q %v", hostAPIServer(cm), body, err)
		}
		w.mu.Lock()
		w.apiReady = time.Now()
		w.mu.Unlock()
	}
	nodes, err := (*cs).CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing nodes through %s: %w", hostAPIServer(cm), err)
	}
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range nodes.Items {
		if _, seen := w.nodeReady[n.Name]; seen {
			continue
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				w.nodeReady[n.Name] = now
			}
		}
	}
	return nil
}

// waitAPI returns when the watch first saw /readyz ok, failing the test
// when it has not within timeout: the API must be reachable from the host.
func (w *apiWatch) waitAPI(timeout time.Duration) time.Time {
	var at time.Time
	w.wait("the API server's /readyz to answer ok to the host", timeout, func() bool {
		at = w.apiReady
		return !at.IsZero()
	})
	return at
}

// waitNodes returns when the watch first saw each named node Ready.
func (w *apiWatch) waitNodes(names []string, timeout time.Duration) map[string]time.Time {
	out := map[string]time.Time{}
	w.wait(fmt.Sprintf("nodes %v Ready, seen from the host", names), timeout, func() bool {
		for _, n := range names {
			at, ok := w.nodeReady[n]
			if !ok {
				return false
			}
			out[n] = at
		}
		return true
	})
	return out
}

// wait polls cond with w.mu held.
func (w *apiWatch) wait(what string, timeout time.Duration, cond func() bool) {
	tb := w.t
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		w.mu.Lock()
		ok, last := cond(), w.lastErr
		w.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s; last error: %s", timeout, what, last)
		}
		time.Sleep(apiPollInterval / 2)
	}
}

// systemdTimestampLayout is `systemctl show --timestamp=us+utc`.
const systemdTimestampLayout = "Mon 2006-01-02 15:04:05.000000 MST"

// parseSystemdTimestamp reads a timestamp property printed by `systemctl
// show -P PROP --timestamp=us+utc`. Empty or "n/a" means the event has not
// happened: ok is false.
func parseSystemdTimestamp(s string) (at time.Time, ok bool, err error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "n/a" {
		return time.Time{}, false, nil
	}
	at, err = time.Parse(systemdTimestampLayout, s)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("systemd timestamp %q: %w", s, err)
	}
	return at, true, nil
}

// unitTimestamp reads a timestamp property of a unit of a machine (or of
// its service manager, for unit ""). The machine's realtime clock is the
// host's, so the result compares with the host's time.Now.
func unitTimestamp(ctx context.Context, cm *clusterMachine, unit, prop string) (time.Time, error) {
	args := []string{"systemctl", "show", "-P", prop, "--timestamp=us+utc"}
	if unit != "" {
		args = append(args, unit)
	}
	out, err := cm.Exec(ctx, args...)
	if err != nil {
		return time.Time{}, err
	}
	at, ok, err := parseSystemdTimestamp(out)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %s of machine %s: %w", unit, prop, cm.Name(), err)
	}
	if !ok {
		return time.Time{}, fmt.Errorf("%s of machine %s has no %s yet", orManager(unit), cm.Name(), prop)
	}
	return at, nil
}

func orManager(unit string) string {
	if unit == "" {
		return "the service manager"
	}
	return unit
}

// machineStarted is when the machine's systemd started: the machine's
// start, for the boot phases.
func machineStarted(ctx context.Context, cm *clusterMachine) (time.Time, error) {
	return unitTimestamp(ctx, cm, "", "UserspaceTimestamp")
}

// etcdFormed is when etcd-manager first found the etcd cluster answering
// with a healthy member: the time of the bootstrapped marker the leader
// writes in the store's control area (control.MarkBootstrapped), as the
// store's listing gives it (milliseconds).
func (c *clusterFixture) etcdFormed(ctx context.Context, etcdCluster string) (time.Time, error) {
	st, err := s3store.New(ctx, s3store.Options{Bucket: clusterBucket, Prefix: clusterPrefixKey, Endpoint: c.minio.Endpoint,
		Region: c.minio.Region, PathStyle: true, AccessKey: c.minio.AccessKey, SecretKey: c.minio.SecretKey})
	if err != nil {
		return time.Time{}, err
	}
	defer st.Close()
	key := control.Layout{Cluster: clusterName, EtcdCluster: etcdCluster}.BootstrappedKey()
	infos, err := st.List(ctx, key)
	if err != nil {
		return time.Time{}, err
	}
	for _, i := range infos {
		if i.Key == key {
			return i.Modified, nil
		}
	}
	return time.Time{}, fmt.Errorf("no bootstrapped marker %s in %s: etcd cluster %s never answered", key, st.URL(), etcdCluster)
}

func TestParseSystemdTimestamp(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    time.Time
		ok, err bool
	}{
		{in: "Mon 2026-11-30 11:00:56.123456 UTC\n", want: time.Date(2026, 11, 30, 11, 0, 56, 123456000, time.UTC), ok: true},
		{in: "", ok: false},
		{in: "n/a", ok: false},
		{in: "@1732960000", err: true},
		{in: "Mon 2026-11-30 11:00:56 UTC", err: true},
	} {
		got, ok, err := parseSystemdTimestamp(tc.in)
		if (err != nil) != tc.err || ok != tc.ok || !got.Equal(tc.want) {
			t.Errorf("parseSystemdTimestamp(%q) = %v, %v, %v; want %v, %v, error %v", tc.in, got, ok, err, tc.want, tc.ok, tc.err)
		}
	}
}
