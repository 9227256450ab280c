// Package kuberender renders the Kubernetes objects nodeup writes to a node
// (KubeletConfiguration, kubeconfigs, Pod manifests) from the official Go
// types, and containerd's configuration with a TOML encoder.
package kuberender

import (
	_ "github.com/pelletier/go-toml/v2"
	_ "k8s.io/api/core/v1"
	_ "k8s.io/client-go/kubernetes"
	_ "k8s.io/client-go/tools/clientcmd"
	_ "k8s.io/client-go/tools/clientcmd/api"
	_ "k8s.io/kubelet/config/v1beta1"
)
