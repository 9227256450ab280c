package units

// Binary paths the definitions run.
const (
	ContainerdBin  = "/usr/local/bin/containerd"
	KubeletBin     = "/usr/local/bin/kubelet"
	ProtokubeBin   = "/usr/local/bin/protokube"
	EtcdManagerBin = "/usr/local/bin/etcd-manager"
	NodeupBin      = "/usr/local/bin/nodeup"
)

// Containerd is containerd.service.
func Containerd() Unit {
	return Unit{
		Name:           "containerd.service",
		Description:    "containerd container runtime",
		Documentation:  "https://containerd.io",
		After:          []string{"network.target", "local-fs.target"},
		ExecStartPre:   []string{"-/sbin/modprobe overlay"},
		ExecStart:      ContainerdBin + " --config /etc/containerd/config.toml",
		Type:           "notify",
		Delegate:       true,
		KillMode:       "process",
		Restart:        "always",
		RestartSec:     "5",
		LimitNOFILE:    "infinity",
		OOMScoreAdjust: "-999",
		WantedBy:       []string{"multi-user.target"},
	}
}

// Kubelet is kubelet.service; its flags come from the environment file.
func Kubelet(envFile string) Unit {
	return Unit{
		Name:             "kubelet.service",
		Description:      "Kubernetes kubelet",
		Documentation:    "https://kubernetes.io/docs/reference/command-line-tools-reference/kubelet/",
		Wants:            []string{"containerd.service"},
		After:            []string{"containerd.service", "network-online.target"},
		EnvironmentFiles: []string{envFile},
		ExecStart:        KubeletBin + " $KUBELET_ARGS",
		Restart:          "always",
		RestartSec:       "2",
		KillMode:         "process",
		WantedBy:         []string{"multi-user.target"},
	}
}

// Protokube is protokube.service.
func Protokube(args []string) Unit {
	return Unit{
		Name:        "protokube.service",
		Description: "protokube: etcd volumes, etcd-manager, gossip and cluster DNS",
		After:       []string{"network-online.target", "containerd.service"},
		Wants:       []string{"network-online.target"},
		ExecStart:   ExecLine(ProtokubeBin, args),
		Restart:     "always",
		RestartSec:  "5",
		WantedBy:    []string{"multi-user.target"},
	}
}

// EtcdDataDir is where protokube mounts the volume of an etcd cluster's
// member on this node, and so etcd-manager's data directory.
func EtcdDataDir(etcdCluster string) string { return "/mnt/etcd/" + etcdCluster }

// NodeConfigCopy is nodeup's local copy of the node configuration, read by
// protokube etcd-volumes.
const NodeConfigCopy = "/etc/nodeup/nodeconfig.yaml"

// ProtokubeEtcdVolumes is protokube-etcd-volumes.service: it holds a member
// slot per etcd cluster (a lease in the state store, hence the network),
// mounts the slot's volume and then starts its etcd-manager unit.
func ProtokubeEtcdVolumes(args []string) Unit {
	return Unit{
		Name:        "protokube-etcd-volumes.service",
		Description: "protokube: mount the etcd volumes, then start etcd-manager",
		Wants:       []string{"network-online.target"},
		After:       []string{"local-fs.target", "network-online.target"},
		ExecStart:   ExecLine(ProtokubeBin, args),
		Restart:     "always",
		RestartSec:  "5",
		WantedBy:    []string{"multi-user.target"},
	}
}

// EtcdManager is etcd-manager-<cluster>.service. It has no [Install]
// section: protokube starts it once the member's volume is mounted.
func EtcdManager(cluster string, args []string) Unit {
	return Unit{
		Name:        "etcd-manager-" + cluster + ".service",
		Description: "etcd-manager for etcd cluster " + cluster,
		After:       []string{"network-online.target"},
		ExecStart:   ExecLine(EtcdManagerBin, args),
		Restart:     "always",
		RestartSec:  "5",
		LimitNOFILE: "65536",
	}
}

// Nodeup is nodeup.service: a oneshot that converges the node on every boot
// from the boot configuration the bootstrap script wrote.
func Nodeup(bootConfig string) Unit {
	return Unit{
		Name:            "nodeup.service",
		Description:     "nodeup: converge this node from the state store",
		After:           []string{"network-online.target"},
		Wants:           []string{"network-online.target"},
		Type:            "oneshot",
		ExecStart:       NodeupBin + " apply --boot-config " + bootConfig,
		RemainAfterExit: false,
		TimeoutStartSec: "0",
		WantedBy:        []string{"multi-user.target"},
	}
}
