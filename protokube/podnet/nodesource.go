package podnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// NodeSource reads this node's pod range.
type NodeSource interface {
	// PodCIDR returns the node's pod range. The error wraps ErrNoPodCIDR
	// while the range is not allocated yet (no Node, or no spec.podCIDR).
	PodCIDR(ctx context.Context) (netip.Prefix, error)
	String() string
}

// ErrNoPodCIDR says the node has no pod range yet.
var ErrNoPodCIDR = errors.New("no pod range allocated yet")

// KubeNode reads spec.podCIDR of one Node object with the kubelet's
// kubeconfig (a node may get its own Node under the Node authorizer). The
// kubeconfig is loaded on every call: on a worker it appears only once the
// kubelet's TLS bootstrap has finished, and its certificate rotates.
type KubeNode struct {
	Kubeconfig string
	Name       string
}

func (k KubeNode) String() string { return "Node " + k.Name + " (kubeconfig " + k.Kubeconfig + ")" }

// PodCIDR implements NodeSource.
func (k KubeNode) PodCIDR(ctx context.Context) (netip.Prefix, error) {
	if _, err := os.Stat(k.Kubeconfig); errors.Is(err, os.ErrNotExist) {
		return netip.Prefix{}, fmt.Errorf("%w: kubeconfig %s does not exist yet (the kubelet writes it after joining)", ErrNoPodCIDR, k.Kubeconfig)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", k.Kubeconfig)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("loading kubeconfig %s: %w", k.Kubeconfig, err)
	}
	rc.Timeout = 10 * time.Second
	rc.UserAgent = "protokube-podnet"
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("kubeconfig %s: %w", k.Kubeconfig, err)
	}
	n, err := cs.CoreV1().Nodes().Get(ctx, k.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return netip.Prefix{}, fmt.Errorf("%w: Node %s is not registered", ErrNoPodCIDR, k.Name)
	}
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("reading Node %s with kubeconfig %s: %w", k.Name, k.Kubeconfig, err)
	}
	return ParseNodePodCIDR(k.Name, n.Spec.PodCIDR, n.Spec.PodCIDRs)
}

// ParseNodePodCIDR picks the IPv4 range of a Node's spec.podCIDR(s).
func ParseNodePodCIDR(node, podCIDR string, podCIDRs []string) (netip.Prefix, error) {
	all := podCIDRs
	if len(all) == 0 && podCIDR != "" {
		all = []string{podCIDR}
	}
	if len(all) == 0 {
		return netip.Prefix{}, fmt.Errorf("%w: Node %s has no spec.podCIDR (is kube-controller-manager running with --allocate-node-cidrs?)", ErrNoPodCIDR, node)
	}
	for _, s := range all {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("Node %s: spec.podCIDRs %q: %w", node, s, err)
		}
		if p.Addr().Is4() {
			return p.Masked(), nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("Node %s: spec.podCIDRs %q has no IPv4 range", node, all)
}

// StaticNode is a NodeSource with a fixed range, for tests without an API
// server.
type StaticNode netip.Prefix

// PodCIDR implements NodeSource.
func (s StaticNode) PodCIDR(ctx context.Context) (netip.Prefix, error) {
	p := netip.Prefix(s)
	if !p.IsValid() {
		return netip.Prefix{}, ErrNoPodCIDR
	}
	return p, nil
}

func (s StaticNode) String() string { return "static range " + netip.Prefix(s).String() }
