package kuberender

import (
	"fmt"
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"sigs.k8s.io/yaml"

	"github.com/kopsnode/agents/pkg/config"
)

// ContainerdSocket is where containerd serves CRI; the kubelet, ctr and
// crictl reach it there.
const ContainerdSocket = "/run/containerd/containerd.sock"

// KubeletOptions is what the KubeletConfiguration takes from outside the
// node configuration.
type KubeletOptions struct {
	// ClientCAFile is the kubernetes CA certificate on the node: the kubelet
	// accepts client certificates it signed (the API server's, for logs and
	// exec).
	ClientCAFile string
	// RotateCertificates makes the kubelet renew its client certificate
	// through the API (CSRs): set on nodes that join by TLS bootstrap.
	RotateCertificates bool
}

// KubeletConfiguration returns the kubelet's configuration for a node
// configuration (with defaults applied).
func KubeletConfiguration(s config.NodeConfigSpec, o KubeletOptions) (*kubeletv1beta1.KubeletConfiguration, error) {
	f, t := false, true
	driver := "cgroupfs"
	if s.ContainerRuntime.SystemdCgroup == nil || *s.ContainerRuntime.SystemdCgroup {
		driver = "systemd"
	}
	kc := &kubeletv1beta1.KubeletConfiguration{
		TypeMeta: metav1.TypeMeta{APIVersion: kubeletv1beta1.SchemeGroupVersion.String(), Kind: "KubeletConfiguration"},
		Authentication: kubeletv1beta1.KubeletAuthentication{
			X509:      kubeletv1beta1.KubeletX509Authentication{ClientCAFile: o.ClientCAFile},
			Webhook:   kubeletv1beta1.KubeletWebhookAuthentication{Enabled: &t},
			Anonymous: kubeletv1beta1.KubeletAnonymousAuthentication{Enabled: &f},
		},
		Authorization:            kubeletv1beta1.KubeletAuthorization{Mode: kubeletv1beta1.KubeletAuthorizationModeWebhook},
		CgroupDriver:             driver,
		ClusterDomain:            s.Kubelet.ClusterDomain,
		ContainerRuntimeEndpoint: "unix://" + ContainerdSocket,
		MaxPods:                  int32(s.Kubelet.MaxPods),
		RotateCertificates:       o.RotateCertificates,
		// The kubelet's serving certificate is self-signed; a signer for
		// serving CSRs would have to check the node's addresses, which the
		// controller manager's does not.
		ServerTLSBootstrap: false,
		FailCgroupV1:       s.Kubelet.FailCgroupV1,
	}
	if s.Kubelet.ClusterDNS != "" {
		kc.ClusterDNS = []string{s.Kubelet.ClusterDNS}
	}
	if s.Kubelet.ResolvConf != "" {
		r := s.Kubelet.ResolvConf
		kc.ResolverConfig = &r
	}
	if len(s.Kubelet.EvictionHard) > 0 {
		kc.EvictionHard = maps.Clone(s.Kubelet.EvictionHard)
	}
	for i, raw := range s.Kubelet.Taints {
		taint, err := ParseTaint(raw)
		if err != nil {
			return nil, fmt.Errorf("spec.kubelet.taints[%d]: %w", i, err)
		}
		kc.RegisterWithTaints = append(kc.RegisterWithTaints, taint)
	}
	return kc, nil
}

// ParseTaint parses key[=value]:Effect, the form of spec.kubelet.taints.
func ParseTaint(s string) (corev1.Taint, error) {
	kv, effect, ok := strings.Cut(s, ":")
	if !ok {
		return corev1.Taint{}, fmt.Errorf("%q is not a taint (key[=value]:Effect)", s)
	}
	k, v, _ := strings.Cut(kv, "=")
	e := corev1.TaintEffect(effect)
	switch e {
	case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
	default:
		return corev1.Taint{}, fmt.Errorf("%q: effect %q is not NoSchedule, PreferNoSchedule or NoExecute", s, effect)
	}
	if k == "" {
		return corev1.Taint{}, fmt.Errorf("%q: empty key", s)
	}
	return corev1.Taint{Key: k, Value: v, Effect: e}, nil
}

// KubeletConfigYAML renders the kubelet's configuration file.
func KubeletConfigYAML(s config.NodeConfigSpec, o KubeletOptions) ([]byte, error) {
	kc, err := KubeletConfiguration(s, o)
	if err != nil {
		return nil, err
	}
	b, err := yaml.Marshal(kc)
	if err != nil {
		return nil, fmt.Errorf("rendering KubeletConfiguration: %w", err)
	}
	return append([]byte("# Managed by nodeup.\n"), b...), nil
}
