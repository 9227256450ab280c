package model_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/harness"
	"github.com/kopsnode/agents/etcd-manager/manager"
	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/fsroot"
	"github.com/kopsnode/agents/nodeup/model"
	"github.com/kopsnode/agents/nodeup/tasks"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/pki"
	"github.com/kopsnode/agents/pkg/store/file"
	"github.com/kopsnode/agents/pkg/testtools"
	units "github.com/kopsnode/agents/systemd-units"
)

// TestRenderedControlPlaneRuns runs the control plane exactly as the
// builders render it for the example control-plane configuration: the PKI
// and kubeconfig tasks issue their files from a store into a scratch root,
// real etcd-managers run the main and events etcd clusters (seeded from the
// configuration, serving on 127.0.0.1, main keeping the API server's etcd
// client certificate), and the real kube-apiserver,
// kube-controller-manager and kube-scheduler start with the flags of their
// units. What the test changes, and nothing else: paths are moved into the
// scratch root, ports to free loopback ports, the components listen on
// 127.0.0.1 only, and the API server, advertising 127.0.0.1, runs without
// the endpoint reconciler (TESTING.md). A wrong flag, file or certificate
// fails it.
func TestRenderedControlPlaneRuns(t *testing.T) {
	apiserverBin := testtools.KubernetesBin(t, "kube-apiserver")
	kcmBin := testtools.KubernetesBin(t, "kube-controller-manager")
	schedBin := testtools.KubernetesBin(t, "kube-scheduler")
	ctx := context.Background()
	root := t.TempDir()

	n, err := config.LoadNodeConfigFile(filepath.Join("..", "..", "examples", "nodeup", "control-plane.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cluster := n.Spec.ClusterName
	mainPort, eventsPort, apiPort := freePort(t), freePort(t), freePort(t)
	for i := range n.Spec.EtcdClusters {
		e := &n.Spec.EtcdClusters[i]
		e.Members = 1
		switch e.Name {
		case "main":
			e.ClientPort = mainPort
		case "events":
			e.ClientPort = eventsPort
		}
	}

	st, err := file.New(filepath.Join(t.TempDir(), "store"), file.Options{CreateRoot: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	ks, err := pki.NewKeystore(st, cluster+"/pki", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := &model.Input{Config: n, StoreURL: "file:///unused", Group: "control-plane", Hostname: "cp-1", Keystore: ks,
		NodeAddress: netip.MustParseAddr("127.0.0.1"), Now: time.Now}
	g, err := model.Build(in)
	if err != nil {
		t.Fatal(err)
	}

	// etcd, as the etcd-manager units run it (the seed and cert dir flags
	// are read back from the rendered units).
	for i, e := range n.Spec.EtcdClusters {
		args := renderedArgs(t, g, units.EtcdManager(e.Name, nil).Name)
		c := harness.New(t, harness.Options{IPPrefix: fmt.Sprintf("127.44.%d", 50+i), Store: st, Cluster: cluster, EtcdCluster: e.Name, Versions: []string{e.Version}})
		cfg := c.Config("m1", c.IP(1))
		cfg.ClientPort = e.ClientPort
		cfg.LocalClientAddress = "127.0.0.1"
		members, _ := strconv.Atoi(flagValue(args, "seed-members"))
		cfg.Seed = &control.Spec{MemberCount: members, EtcdVersion: flagValue(args, "seed-etcd-version")}
		if d := flagValue(args, "apiserver-client-cert-dir"); d != "" {
			cfg.APIServerClientCertDir = filepath.Join(root, d)
		}
		c.StartWith(cfg)
	}

	// The PKI and kubeconfigs, issued by their tasks into the root. The
	// kubeconfigs point at the test's API port.
	fsys, err := fsroot.New(root)
	if err != nil {
		t.Fatal(err)
	}
	env := &engine.Env{FS: fsys, Changed: func(string) bool { return false }}
	for _, id := range g.IDs() {
		tk, _ := g.Get(id)
		switch tk := tk.(type) {
		case *tasks.Kubeconfig:
			tk.Server = strings.Replace(tk.Server, ":"+strconv.Itoa(model.APIServerPort), ":"+strconv.Itoa(apiPort), 1)
		case *tasks.Certificate, *tasks.CAFiles, *tasks.SigningKeyFiles:
		default:
			continue
		}
		d, err := tk.Find(ctx, env)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if d != nil {
			if err := tk.Apply(ctx, env, d); err != nil {
				t.Fatalf("%s: %v", id, err)
			}
		}
	}
	waitFor(t, 90*time.Second, "etcd-manager to write the API server's etcd client files", func() error {
		for _, f := range []string{manager.APIServerClientCertFile, manager.APIServerClientKeyFile, manager.APIServerCAFile} {
			if _, err := os.Stat(filepath.Join(root, model.APIServerEtcdClientDir, f)); err != nil {
				return err
			}
		}
		return nil
	})

	apiArgs := rewrite(root, renderedArgs(t, g, "kube-apiserver.service"), map[string]string{"secure-port": strconv.Itoa(apiPort)})
	apiArgs = append(apiArgs, "--bind-address=127.0.0.1", "--endpoint-reconciler-type=none")
	startProcess(t, apiserverBin, apiArgs)

	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(root, model.AdminKubeconfig))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 120*time.Second, "kube-apiserver /readyz through admin.conf", func() error {
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("%v: %s", err, body)
		}
		return nil
	})
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "rendered", Namespace: "default"}, Data: map[string]string{"control": "plane"}}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating a ConfigMap as kubernetes-admin: %v", err)
	}
	got, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "rendered", metav1.GetOptions{})
	if err != nil || got.Data["control"] != "plane" {
		t.Fatalf("reading the ConfigMap back: %+v, %v", got, err)
	}
	// Events are stored in the events etcd cluster (the override), through
	// the one etcd client certificate of the main cluster's directory.
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "rendered.1", Namespace: "default"},
		InvolvedObject: corev1.ObjectReference{Kind: "ConfigMap", Namespace: "default", Name: "rendered"}, Reason: "Test", Message: "to the events cluster", Type: "Normal"}
	if _, err := cs.CoreV1().Events("default").Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating an Event: %v", err)
	}
	if keys := etcdKeys(t, root, eventsPort, "/registry/events/default/"); len(keys) == 0 {
		t.Error("the Event is not in the events etcd cluster")
	}
	if keys := etcdKeys(t, root, mainPort, "/registry/events/"); len(keys) != 0 {
		t.Errorf("events in the main etcd cluster: %v", keys)
	}
	if keys := etcdKeys(t, root, mainPort, "/registry/configmaps/default/rendered"); len(keys) != 1 {
		t.Errorf("the ConfigMap is not in the main etcd cluster: %v", keys)
	}

	startProcess(t, kcmBin, append(rewrite(root, renderedArgs(t, g, "kube-controller-manager.service"), nil), "--secure-port="+strconv.Itoa(freePort(t))))
	startProcess(t, schedBin, append(rewrite(root, renderedArgs(t, g, "kube-scheduler.service"), nil), "--secure-port="+strconv.Itoa(freePort(t))))
	for _, lease := range []string{"kube-controller-manager", "kube-scheduler"} {
		waitFor(t, 120*time.Second, "the "+lease+" leader lease", func() error {
			l, err := cs.CoordinationV1().Leases("kube-system").Get(ctx, lease, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
				return errors.New("no holder")
			}
			return nil
		})
	}
	// The controller manager works with its credentials: the service
	// account controller creates default service accounts.
	waitFor(t, 60*time.Second, "the default ServiceAccount", func() error {
		_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return errors.New("not created yet")
		}
		return err
	})
}

// renderedArgs reads the arguments of a unit's ExecStart in the graph.
func renderedArgs(t *testing.T, g *engine.Graph, unit string) []string {
	t.Helper()
	tk, ok := g.Get(tasks.UnitID(unit))
	if !ok {
		t.Fatalf("the graph has no %s", unit)
	}
	for _, l := range strings.Split(tk.(*tasks.Service).Content, "\n") {
		if v, ok := strings.CutPrefix(l, "ExecStart="); ok {
			return units.SplitExecLine(v)[1:]
		}
	}
	t.Fatalf("%s has no ExecStart", unit)
	return nil
}

func flagValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

// rewrite moves every absolute path under /etc/kubernetes into root and
// replaces the named flags' values.
func rewrite(root string, args []string, set map[string]string) []string {
	out := make([]string, 0, len(args))
	for _, a := range args {
		name, v, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if nv, ok := set[name]; ok {
			v = nv
		} else if strings.HasPrefix(v, "/etc/kubernetes/") {
			v = filepath.Join(root, v)
		}
		out = append(out, "--"+name+"="+v)
	}
	return out
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startProcess starts bin with args, logging to a file that is printed
// when the test fails, and stops it by its process id in t.Cleanup.
func startProcess(t *testing.T, bin string, args []string) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), filepath.Base(bin)+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = lf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("%s %s\n--- end of its log:\n%s", bin, strings.Join(args, " "), b)
		}
	})
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("waiting %s for %s: %v", timeout, what, err)
}

// etcdKeys lists keys under prefix in the etcd at 127.0.0.1:port, as the
// API server reaches it (its certificate files from root).
func etcdKeys(t *testing.T, root string, port int, prefix string) []string {
	t.Helper()
	dir := filepath.Join(root, model.APIServerEtcdClientDir)
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, manager.APIServerClientCertFile), filepath.Join(dir, manager.APIServerClientKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, manager.APIServerCAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: []tls.Certificate{cert}}
	cl, err := clientv3.New(clientv3.Config{Endpoints: []string{"https://127.0.0.1:" + strconv.Itoa(port)}, TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cl.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatalf("listing %s on 127.0.0.1:%d: %v", prefix, port, err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys
}
