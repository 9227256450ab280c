package units

// ManifestsConfigCopy is nodeup's local copy of the node configuration
// read by protokube manifests: only the fields the system manifests depend
// on, so that other changes do not restart it.
const ManifestsConfigCopy = "/etc/nodeup/manifests-nodeconfig.yaml"

// ProtokubeManifests is protokube-manifests.service on control-plane nodes:
// it applies the cluster's system manifests once the local API server
// answers, and keeps them applied. It waits for the API server itself, so
// it is ordered after kube-apiserver.service without requiring it.
func ProtokubeManifests(args []string) Unit {
	return Unit{
		Name:        "protokube-manifests.service",
		Description: "protokube: apply the cluster's system manifests (node bootstrap, CoreDNS)",
		Wants:       []string{"network-online.target"},
		After:       []string{"network-online.target", "kube-apiserver.service"},
		ExecStart:   ExecLine(ProtokubeBin, args),
		Restart:     "always",
		RestartSec:  "5",
		WantedBy:    []string{"multi-user.target"},
	}
}
