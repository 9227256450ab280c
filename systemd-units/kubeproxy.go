package units

import "strings"

// KubeProxyBin is where nodeup installs kube-proxy.
const KubeProxyBin = "/usr/local/bin/kube-proxy"

// KubeProxy is kube-proxy.service. It starts after the kubelet, whose
// kubeconfig it uses; until the kubelet has written it (TLS bootstrap)
// kube-proxy exits and is restarted.
func KubeProxy(args []string) Unit {
	return Unit{
		Name:          "kube-proxy.service",
		Description:   "Kubernetes kube-proxy",
		Documentation: "https://kubernetes.io/docs/reference/command-line-tools-reference/kube-proxy/",
		After:         []string{"kubelet.service", "network-online.target"},
		Wants:         []string{"network-online.target"},
		ExecStart:     KubeProxyBin + " " + strings.Join(args, " "),
		Restart:       "always",
		RestartSec:    "5",
		WantedBy:      []string{"multi-user.target"},
	}
}
