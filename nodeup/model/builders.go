package model

import (
	"fmt"
	"net"
	"strconv"

	"github.com/kopsnode/agents/nodeup/tasks"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/paths"
	"github.com/kopsnode/agents/protokube/etcdvolumes"
	"github.com/kopsnode/agents/protokube/gossipd"
	"github.com/kopsnode/agents/protokube/podnet"
	units "github.com/kopsnode/agents/systemd-units"
)

type packagesBuilder struct{}

func (packagesBuilder) Name() string { return "packages" }
func (packagesBuilder) Build(in *Input, c *Collector) error {
	if len(in.Config.Spec.Packages) == 0 {
		return nil
	}
	return c.Add(&tasks.Packages{Names: append([]string(nil), in.Config.Spec.Packages...)})
}

// Kubernetes needs these whatever the configuration says; the
// configuration adds to and overrides them.
var (
	kubernetesSysctls = map[string]string{
		"net.ipv4.ip_forward":                 "1",
		"net.bridge.bridge-nf-call-iptables":  "1",
		"net.bridge.bridge-nf-call-ip6tables": "1",
		"net.ipv4.conf.all.rp_filter":         "0",
		"fs.inotify.max_user_watches":         "524288",
		"vm.overcommit_memory":                "1",
		"kernel.panic":                        "10",
	}
	kubernetesModules = []string{"br_netfilter", "overlay"}
)

type kernelBuilder struct{}

func (kernelBuilder) Name() string { return "kernel" }
func (kernelBuilder) Build(in *Input, c *Collector) error {
	values := map[string]string{}
	for k, v := range kubernetesSysctls {
		values[k] = v
	}
	for k, v := range in.Config.Spec.Sysctls {
		values[k] = v
	}
	if err := c.Add(&tasks.Sysctl{Path: "/etc/sysctl.d/99-kubernetes.conf", Values: values}); err != nil {
		return err
	}
	seen := map[string]bool{}
	var mods []string
	for _, m := range append(append([]string(nil), kubernetesModules...), in.Config.Spec.KernelModules...) {
		if !seen[m] {
			seen[m] = true
			mods = append(mods, m)
		}
	}
	return c.Add(&tasks.KernelModules{Path: "/etc/modules-load.d/kubernetes.conf", Modules: mods})
}

type protokubeBuilder struct{}

func (protokubeBuilder) Name() string { return "protokube" }
func (protokubeBuilder) Build(in *Input, c *Collector) error {
	s := in.Config.Spec
	kubenet := s.Networking.Mode == config.NetworkingKubenet
	if s.Role != config.RoleControlPlane {
		// Workers run protokube for gossip when the configuration ships
		// it, and always in kubenet mode: protokube runs the pod network.
		if s.Gossip == nil || (!kubenet && !hasAsset(s, "protokube")) {
			return nil
		}
	}
	a, err := c.Asset("protokube")
	if err != nil {
		if kubenet {
			return fmt.Errorf("spec.networking.mode kubenet: protokube runs the pod network on every node: %w", err)
		}
		return err
	}
	if err := c.Add(&tasks.Install{Path: units.ProtokubeBin, Asset: a, Mode: 0o755}); err != nil {
		return err
	}
	if s.Gossip != nil {
		if err := c.Add(service(units.Protokube(protokubeArgs(in)), []string{units.ProtokubeBin})); err != nil {
			return err
		}
	}
	if s.Role != config.RoleControlPlane || len(s.EtcdClusters) == 0 {
		return nil
	}
	// protokube etcd-volumes reads a local copy of the configuration, so it
	// never starts etcd-manager from a configuration nodeup did not verify.
	// The copy holds only what it reads, so that changing, say, a kubelet
	// setting does not restart it.
	doc, err := config.Marshal(&config.NodeConfig{
		TypeMeta: in.Config.TypeMeta,
		Metadata: in.Config.Metadata,
		Spec: config.NodeConfigSpec{
			ClusterName:       s.ClusterName,
			Role:              s.Role,
			KubernetesVersion: s.KubernetesVersion,
			EtcdClusters:      s.EtcdClusters,
			Volume:            s.Volume,
		},
	})
	if err != nil {
		return fmt.Errorf("rendering %s: %w", units.NodeConfigCopy, err)
	}
	if err := c.Add(file(units.NodeConfigCopy, string(doc), 0o600)); err != nil {
		return err
	}
	return c.Add(service(units.ProtokubeEtcdVolumes(EtcdVolumesConfig(in).Args()), []string{units.ProtokubeBin, units.NodeConfigCopy}))
}

// EtcdVolumesConfig is the run configuration of protokube etcd-volumes:
// the configuration copy (which carries the volume provider and disks) and
// the store of the member slot leases, opened as nodeup opened it.
func EtcdVolumesConfig(in *Input) etcdvolumes.Config {
	c := etcdvolumes.DefaultConfig()
	c.ConfigFile = units.NodeConfigCopy
	c.Store = in.StoreSettings()
	return c
}

// protokubeArgs are the arguments of protokube.service: the gossip
// command and its flags, rendered from GossipConfig.
func protokubeArgs(in *Input) []string {
	return append([]string{"gossip"}, GossipConfig(in).Args()...)
}

// GossipConfig is the run configuration of `protokube gossip` on this node,
// built from the node configuration. Control-plane nodes publish the API
// server's internal name with their own address, which is how workers find
// it without cloud credentials.
//
// Control-plane nodes create the gossip keyring if the store has none
// (create-if-absent: the first to boot wins); workers wait for it. In
// kubenet mode protokube also runs the pod network (package
// protokube/podnet): it reads the Node's range with the kubelet's
// kubeconfig, writes the CNI configuration and routes between nodes.
func GossipConfig(in *Input) gossipd.Config {
	s := in.Config.Spec
	cfg := gossipd.DefaultConfig()
	cfg.Cluster = s.ClusterName
	cfg.Store = in.StoreSettings()
	cfg.HostsFile = paths.HostsFile
	cfg.CreateKeyring = s.Role == config.RoleControlPlane
	if g := s.Gossip; g != nil {
		if g.Port != 0 {
			cfg.Bind = net.JoinHostPort("0.0.0.0", strconv.Itoa(g.Port))
		}
		if g.Seeds != "" {
			cfg.Seeds = g.Seeds
		}
		cfg.StaticSeeds = append(cfg.StaticSeeds, g.StaticSeeds...)
		if g.DNSListen != "" {
			cfg.DNSListen = g.DNSListen
		}
		cfg.DNSForward = g.Forward
	}
	if s.Role == config.RoleControlPlane {
		cfg.Publish = append(cfg.Publish, "api="+gossipd.SelfAddr)
	}
	if n := s.Networking; n.Mode == config.NetworkingKubenet {
		pn := podnet.DefaultConfig()
		pn.Mode = podnet.ModeKubenet
		pn.Kubeconfig = KubeletKubeconfig
		pn.NodeName = in.Hostname // the Node's name: its kubelet certificate says system:node:<Hostname>
		pn.ClusterCIDR = n.PodCIDR
		pn.NonMasqueradeCIDR = n.NonMasqueradeCIDR
		pn.MTU = n.MTU
		cfg.PodNet = pn
	}
	return cfg
}

type etcdManagerBuilder struct{}

func (etcdManagerBuilder) Name() string { return "etcd-manager" }
func (etcdManagerBuilder) Build(in *Input, c *Collector) error {
	s := in.Config.Spec
	if s.Role != config.RoleControlPlane || len(s.EtcdClusters) == 0 {
		return nil
	}
	a, err := c.Asset("etcd-manager")
	if err != nil {
		return err
	}
	if err := c.Add(&tasks.Install{Path: units.EtcdManagerBin, Asset: a, Mode: 0o755}); err != nil {
		return err
	}
	for _, e := range s.EtcdClusters {
		// etcdManagerArgs and etcdManagerInputs are in controlplane.go.
		args, err := etcdManagerArgs(in, e)
		if err != nil {
			return err
		}
		svc := service(units.EtcdManager(e.Name, args), etcdManagerInputs(e))
		// protokube starts it once the member's volume is mounted.
		svc.RestartOnly = true
		if err := c.Add(svc); err != nil {
			return err
		}
	}
	return nil
}

type nodeupBuilder struct{}

func (nodeupBuilder) Name() string { return "nodeup" }
func (nodeupBuilder) Build(in *Input, c *Collector) error {
	bc := in.BootConfig
	if bc == "" {
		bc = DefaultBootConfig
	}
	return c.Add(&tasks.Service{Name: "nodeup.service", Content: units.Nodeup(bc).Render(), NoStart: true})
}

// DefaultBootConfig is where the bootstrap script writes the boot configuration.
const DefaultBootConfig = "/etc/nodeup/boot.yaml"

func hasAsset(s config.NodeConfigSpec, name string) bool {
	for _, a := range s.Assets {
		if a.Name == name {
			return true
		}
	}
	return false
}
