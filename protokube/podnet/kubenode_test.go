package podnet

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kopsnode/agents/pkg/testtools"
)

// nodeKubeconfig writes a kubeconfig with a node's own client certificate
// (system:node:<name>, group system:nodes), as the kubelet's holds.
func nodeKubeconfig(t *testing.T, api *testtools.KubeAPIServer, node string) string {
	t.Helper()
	cert, key := api.IssueCert(t, "system:node:"+node, []string{"system:nodes"}, false, nil, nil)
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = &clientcmdapi.Cluster{Server: api.URL, CertificateAuthorityData: api.CAPEM}
	kc.AuthInfos["u"] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
	kc.Contexts["x"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	kc.CurrentContext = "x"
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// KubeNode against a real kube-apiserver (Node,RBAC authorization, as on a
// control-plane node): with a node's own client certificate
// (system:node:<name>, group system:nodes), as the kubelet's kubeconfig
// holds, it reads its Node's spec.podCIDR; it reports waiting
// (ErrNoPodCIDR) while the kubeconfig is absent, the Node is not
// registered, or no range is allocated.
func TestKubeNodeReadsItsOwnNodeFromARealAPIServer(t *testing.T) {
	api := testtools.StartKubeAPIServer(t, testtools.KubeAPIOptions{})
	ctx := context.Background()
	admin, err := kubernetes.NewForConfig(api.Admin)
	if err != nil {
		t.Fatal(err)
	}
	for name, cidr := range map[string]string{"n1": "100.96.7.0/24", "n2": ""} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDR: cidr}}
		if cidr != "" {
			n.Spec.PodCIDRs = []string{cidr}
		}
		if _, err := admin.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating Node %s: %v", name, err)
		}
	}
	kubeconfig := func(node string) string { return nodeKubeconfig(t, api, node) }

	got, err := KubeNode{Kubeconfig: kubeconfig("n1"), Name: "n1"}.PodCIDR(ctx)
	if err != nil || got.String() != "100.96.7.0/24" {
		t.Fatalf("n1: %v, %v; want 100.96.7.0/24", got, err)
	}
	for _, c := range []struct {
		name string
		src  KubeNode
		want string
	}{
		{"no range allocated", KubeNode{Kubeconfig: kubeconfig("n2"), Name: "n2"}, "no spec.podCIDR"},
		{"not registered", KubeNode{Kubeconfig: kubeconfig("n3"), Name: "n3"}, "not registered"},
		{"kubeconfig not written yet", KubeNode{Kubeconfig: filepath.Join(t.TempDir(), "kubeconfig"), Name: "n1"}, "does not exist yet"},
	} {
		_, err := c.src.PodCIDR(ctx)
		if !errors.Is(err, ErrNoPodCIDR) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want ErrNoPodCIDR saying %q", c.name, err, c.want)
		}
	}
	// A kubeconfig that cannot be used is an error naming it, not waiting.
	bad := KubeNode{Kubeconfig: kubeconfig("n1"), Name: "n1"}
	kc, err := clientcmd.LoadFromFile(bad.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kc.Clusters["c"].CertificateAuthorityData = []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	if err := clientcmd.WriteToFile(*kc, bad.Kubeconfig); err != nil {
		t.Fatal(err)
	}
	if _, err := bad.PodCIDR(ctx); err == nil || errors.Is(err, ErrNoPodCIDR) || !strings.Contains(err.Error(), bad.Kubeconfig) {
		t.Errorf("broken kubeconfig: err %v, want an error naming %s", err, bad.Kubeconfig)
	}
}

// The whole allocation chain with real parts: kube-controller-manager's
// node IPAM controller (--allocate-node-cidrs, the flags nodeup gives it)
// cuts a /24 per Node from the cluster range, and each node's KubeNode
// reads its own; the ranges are distinct and inside the cluster range.
func TestControllerManagerAllocatesRangesKubeNodeReads(t *testing.T) {
	api := testtools.StartKubeAPIServer(t, testtools.KubeAPIOptions{})
	ctx := context.Background()
	admin, err := kubernetes.NewForConfig(api.Admin)
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "kube-controller-manager.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testtools.KubernetesBin(t, "kube-controller-manager"),
		"--kubeconfig="+api.AdminKubeconfig, "--controllers=nodeipam", "--allocate-node-cidrs",
		"--cluster-cidr=100.96.0.0/11", "--node-cidr-mask-size=24", "--service-cluster-ip-range=100.64.0.0/13",
		"--leader-elect=false", "--secure-port=0")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("kube-controller-manager log:\n%s", b)
		}
	})
	cluster := netip.MustParsePrefix("100.96.0.0/11")
	seen := map[netip.Prefix]string{}
	for _, name := range []string{"node-a", "node-b"} {
		if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		src := KubeNode{Kubeconfig: nodeKubeconfig(t, api, name), Name: name}
		deadline := time.Now().Add(60 * time.Second)
		for {
			p, err := src.PodCIDR(ctx)
			if err == nil {
				if p.Bits() != 24 || !cluster.Contains(p.Addr()) {
					t.Fatalf("%s got %s, want a /24 inside %s", name, p, cluster)
				}
				if other, dup := seen[p]; dup {
					t.Fatalf("%s and %s both got %s", name, other, p)
				}
				seen[p] = name
				break
			}
			if !errors.Is(err, ErrNoPodCIDR) {
				t.Fatalf("%s: %v", name, err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no range allocated within 60 s: %v", name, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}
