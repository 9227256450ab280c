package model

import (
	"fmt"

	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/protokube/manifests"
	units "github.com/kopsnode/agents/systemd-units"
)

// manifestsBuilder runs `protokube manifests` on nodes that run the API
// server (control-plane nodes with the kube-apiserver asset): it applies
// the system manifests to the local API server with the admin kubeconfig.
type manifestsBuilder struct{}

func (manifestsBuilder) Name() string { return "manifests" }
func (manifestsBuilder) Build(in *Input, c *Collector) error {
	s := in.Config.Spec
	if s.Role != config.RoleControlPlane || !hasAsset(s, "kube-apiserver") {
		return nil
	}
	// The protokube builder installs the binary on every control-plane
	// node; the unit names it as an input so a new binary restarts it.
	doc, err := config.Marshal(ManifestsConfig(in.Config))
	if err != nil {
		return fmt.Errorf("rendering %s: %w", units.ManifestsConfigCopy, err)
	}
	if err := c.Add(file(units.ManifestsConfigCopy, string(doc), 0o600)); err != nil {
		return err
	}
	cfg := manifests.DefaultConfig()
	cfg.ConfigFile, cfg.Store = units.ManifestsConfigCopy, in.StoreSettings()
	args := append([]string{"manifests"}, cfg.Args()...)
	return c.Add(service(units.ProtokubeManifests(args), []string{units.ProtokubeBin, units.ManifestsConfigCopy}))
}

// ManifestsConfig is the configuration copy protokube manifests reads:
// the fields the manifests depend on (cluster name for the store,
// networking and kubelet DNS settings), so that changing anything else
// does not restart it, plus the etcd clusters, without which a
// control-plane configuration does not validate.
func ManifestsConfig(n *config.NodeConfig) *config.NodeConfig {
	s := n.Spec
	return &config.NodeConfig{
		TypeMeta: n.TypeMeta,
		Metadata: n.Metadata,
		Spec: config.NodeConfigSpec{
			ClusterName:       s.ClusterName,
			Role:              s.Role,
			KubernetesVersion: s.KubernetesVersion,
			Networking:        s.Networking,
			EtcdClusters:      s.EtcdClusters,
			Kubelet:           config.KubeletSpec{ClusterDNS: s.Kubelet.ClusterDNS, ClusterDomain: s.Kubelet.ClusterDomain},
		},
	}
}
