// Package paths is the one home of the on-node paths that more than one
// binary uses: nodeup writes a file there and a daemon reads it, or nodeup
// renders a daemon flag whose default the daemon also needs. A path that
// only one binary knows stays with that binary; the units' binary paths and
// the configuration copies live with the unit definitions
// (systemd-units), the CNI directories in package cni.
package paths

const (
	// HostsFile is the hosts file whose managed blocks protokube gossip and
	// etcd-manager keep (through package hostsfile).
	HostsFile = "/etc/hosts"

	// AdminKubeconfig is the admin kubeconfig nodeup writes on
	// control-plane nodes (system:masters); protokube manifests applies
	// the system manifests with it and nodeup status reads the API with it.
	AdminKubeconfig = "/etc/kubernetes/admin.conf"

	// KubeletKubeconfig is the kubelet's kubeconfig (written by nodeup on
	// control-plane nodes, by the kubelet's TLS bootstrap on workers);
	// protokube's pod network reads the node's own Node with it.
	KubeletKubeconfig = "/var/lib/kubelet/kubeconfig"

	// EtcdBinDirRoot holds one v<version>/ directory per installed etcd
	// version (etcd, etcdutl): nodeup installs them, etcd-manager runs
	// them.
	EtcdBinDirRoot = "/opt/etcd"
)
