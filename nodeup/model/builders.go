package model

import (
	"fmt"
	"strings"

	"github.com/kopsnode/agents/cni"
	"github.com/kopsnode/agents/nodeup/tasks"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/pki"
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

type containerdBuilder struct{}

func (containerdBuilder) Name() string { return "containerd" }

// Paths of the container runtime.
const (
	ContainerdConfig = "/etc/containerd/config.toml"
	RuncBin          = "/usr/local/sbin/runc"
	ShimBin          = "/usr/local/bin/containerd-shim-runc-v2"
)

func (containerdBuilder) Build(in *Input, c *Collector) error {
	rt := in.Config.Spec.ContainerRuntime
	if rt.Name != "" && rt.Name != "containerd" {
		return fmt.Errorf("spec.containerRuntime.name: %q is not supported by nodeup (containerd only)", rt.Name)
	}
	ctr, err := c.Asset("containerd")
	if err != nil {
		return err
	}
	if !ctr.Extract {
		return fmt.Errorf("spec.assets: containerd must be an archive (extract: true) with bin/containerd and bin/containerd-shim-runc-v2")
	}
	runc, err := c.Asset("runc")
	if err != nil {
		return err
	}
	for _, t := range []*tasks.Install{
		{Path: units.ContainerdBin, Asset: ctr, Member: "bin/containerd", Mode: 0o755},
		{Path: ShimBin, Asset: ctr, Member: "bin/containerd-shim-runc-v2", Mode: 0o755},
		{Path: RuncBin, Asset: runc, Mode: 0o755},
	} {
		if err := c.Add(t); err != nil {
			return err
		}
	}
	if err := c.Add(file(ContainerdConfig, ContainerdConfigTOML(rt), 0o644)); err != nil {
		return err
	}
	return c.Add(service(units.Containerd(), []string{units.ContainerdBin, ShimBin, RuncBin, ContainerdConfig},
		tasks.FileID("/etc/modules-load.d/kubernetes.conf")))
}

// ContainerdConfigTOML renders /etc/containerd/config.toml.
func ContainerdConfigTOML(rt config.ContainerRuntimeSpec) string {
	systemd := rt.SystemdCgroup == nil || *rt.SystemdCgroup
	var b strings.Builder
	b.WriteString("# Managed by nodeup.\nversion = 2\n\n")
	b.WriteString("[plugins.\"io.containerd.grpc.v1.cri\"]\n")
	fmt.Fprintf(&b, "  sandbox_image = %q\n\n", rt.SandboxImage)
	b.WriteString("[plugins.\"io.containerd.grpc.v1.cri\".cni]\n")
	fmt.Fprintf(&b, "  bin_dir = %q\n  conf_dir = %q\n\n", cni.BinDir, cni.ConfDir)
	b.WriteString("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n")
	b.WriteString("  runtime_type = \"io.containerd.runc.v2\"\n\n")
	b.WriteString("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n")
	fmt.Fprintf(&b, "  BinaryName = %q\n  SystemdCgroup = %t\n", RuncBin, systemd)
	for _, host := range sortedKeys(rt.RegistryMirrors) {
		fmt.Fprintf(&b, "\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.%q]\n", host)
		q := make([]string, len(rt.RegistryMirrors[host]))
		for i, e := range rt.RegistryMirrors[host] {
			q[i] = fmt.Sprintf("%q", e)
		}
		fmt.Fprintf(&b, "  endpoint = [%s]\n", strings.Join(q, ", "))
	}
	return b.String()
}

type kubeletBuilder struct{}

func (kubeletBuilder) Name() string { return "kubelet" }

// Paths of the kubelet.
const (
	KubeletConfig     = "/var/lib/kubelet/config.yaml"
	KubeletKubeconfig = "/var/lib/kubelet/kubeconfig"
	KubeletEnv        = "/etc/default/kubelet"
)

func (kubeletBuilder) Build(in *Input, c *Collector) error {
	spec := in.Config.Spec
	a, err := c.Asset("kubelet")
	if err != nil {
		return err
	}
	if err := c.Add(&tasks.Install{Path: units.KubeletBin, Asset: a, Mode: 0o755}); err != nil {
		return err
	}
	if err := c.Add(file(KubeletConfig, KubeletConfigYAML(spec), 0o644)); err != nil {
		return err
	}
	if err := c.Add(file(KubeletEnv, KubeletEnvFile(spec), 0o644)); err != nil {
		return err
	}
	host := in.Hostname
	if host == "" {
		host = "localhost"
	}
	if err := c.Add(&tasks.Kubeconfig{
		Path:     KubeletKubeconfig,
		Server:   spec.Kubelet.APIServer,
		User:     "system:node:" + host,
		Groups:   []string{"system:nodes"},
		CA:       pki.CAKubernetes,
		Keystore: in.Keystore,
		Now:      in.Now,
	}); err != nil {
		return err
	}
	return c.Add(service(units.Kubelet(KubeletEnv),
		[]string{units.KubeletBin, KubeletConfig, KubeletEnv, KubeletKubeconfig},
		tasks.UnitID("containerd.service")))
}

// KubeletConfigYAML renders the KubeletConfiguration file.
func KubeletConfigYAML(s config.NodeConfigSpec) string {
	systemd := s.ContainerRuntime.SystemdCgroup == nil || *s.ContainerRuntime.SystemdCgroup
	driver := "cgroupfs"
	if systemd {
		driver = "systemd"
	}
	var b strings.Builder
	b.WriteString("# Managed by nodeup.\napiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n")
	b.WriteString("authentication:\n  anonymous:\n    enabled: false\n  webhook:\n    enabled: true\nauthorization:\n  mode: Webhook\n")
	fmt.Fprintf(&b, "cgroupDriver: %s\n", driver)
	if s.Kubelet.ClusterDNS != "" {
		fmt.Fprintf(&b, "clusterDNS:\n  - %s\n", s.Kubelet.ClusterDNS)
	}
	fmt.Fprintf(&b, "clusterDomain: %s\n", s.Kubelet.ClusterDomain)
	b.WriteString("containerRuntimeEndpoint: unix:///run/containerd/containerd.sock\n")
	fmt.Fprintf(&b, "maxPods: %d\n", s.Kubelet.MaxPods)
	if s.Networking.Mode != config.NetworkingExternal && s.Networking.PodCIDR != "" && s.Networking.Mode == config.NetworkingKubenet {
		fmt.Fprintf(&b, "podCIDR: %s\n", s.Networking.PodCIDR)
	}
	if len(s.Kubelet.Taints) > 0 {
		b.WriteString("registerWithTaints:\n")
		for _, t := range s.Kubelet.Taints {
			kv, effect, _ := strings.Cut(t, ":")
			k, v, _ := strings.Cut(kv, "=")
			fmt.Fprintf(&b, "  - key: %q\n", k)
			if v != "" {
				fmt.Fprintf(&b, "    value: %q\n", v)
			}
			fmt.Fprintf(&b, "    effect: %q\n", effect)
		}
	}
	return b.String()
}

// KubeletEnvFile renders /etc/default/kubelet with the flags that are not in
// the configuration file.
func KubeletEnvFile(s config.NodeConfigSpec) string {
	args := []string{"--config=" + KubeletConfig, "--kubeconfig=" + KubeletKubeconfig}
	if len(s.Kubelet.NodeLabels) > 0 {
		var l []string
		for _, k := range sortedKeys(s.Kubelet.NodeLabels) {
			l = append(l, k+"="+s.Kubelet.NodeLabels[k])
		}
		args = append(args, "--node-labels="+strings.Join(l, ","))
	}
	for _, k := range sortedKeys(s.Kubelet.ExtraArgs) {
		args = append(args, "--"+k+"="+s.Kubelet.ExtraArgs[k])
	}
	return "# Managed by nodeup.\nKUBELET_ARGS=\"" + strings.Join(args, " ") + "\"\n"
}

type cniBuilder struct{}

func (cniBuilder) Name() string { return "cni" }
func (cniBuilder) Build(in *Input, c *Collector) error {
	plan, err := cni.Render(in.Config.Spec.Networking)
	if err != nil {
		return fmt.Errorf("spec.%w", err)
	}
	if len(plan.Plugins) > 0 {
		a, err := c.Asset("cni-plugins")
		if err != nil {
			return err
		}
		for _, p := range plan.Plugins {
			if err := c.Add(&tasks.Install{Path: cni.BinDir + "/" + p, Asset: a, Member: p, Mode: 0o755}); err != nil {
				return err
			}
		}
	}
	for _, f := range plan.Files {
		if err := c.Add(file(f.Path, string(f.Content), 0o644)); err != nil {
			return err
		}
	}
	return nil
}

type protokubeBuilder struct{}

func (protokubeBuilder) Name() string { return "protokube" }
func (protokubeBuilder) Build(in *Input, c *Collector) error {
	s := in.Config.Spec
	if s.Role != config.RoleControlPlane {
		// Workers run protokube only for gossip, and only when the
		// configuration ships it.
		if s.Gossip == nil || !hasAsset(s, "protokube") {
			return nil
		}
	}
	a, err := c.Asset("protokube")
	if err != nil {
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
		},
	})
	if err != nil {
		return fmt.Errorf("rendering %s: %w", units.NodeConfigCopy, err)
	}
	if err := c.Add(file(units.NodeConfigCopy, string(doc), 0o600)); err != nil {
		return err
	}
	args := []string{"etcd-volumes", "--config=" + units.NodeConfigCopy}
	for _, e := range s.EtcdClusters {
		if e.Volume.Device != "" {
			args = append(args, "--device="+e.Name+"="+e.Volume.Device)
		}
	}
	return c.Add(service(units.ProtokubeEtcdVolumes(args), []string{units.ProtokubeBin, units.NodeConfigCopy}))
}

// protokubeArgs are protokube's gossip daemon flags from the configuration.
// Control-plane nodes publish the API server's internal name with their own
// address, which is how workers find it without cloud credentials.
func protokubeArgs(in *Input) []string {
	s := in.Config.Spec
	args := []string{"gossip", "--store=" + in.StoreURL, "--cluster=" + s.ClusterName, "--hosts-file=/etc/hosts"}
	if g := s.Gossip; g != nil {
		if g.Port != 0 {
			args = append(args, fmt.Sprintf("--bind=0.0.0.0:%d", g.Port))
		}
		if g.Seeds != "" {
			args = append(args, "--seeds="+g.Seeds)
		}
		for _, seed := range g.StaticSeeds {
			args = append(args, "--static-seed="+seed)
		}
		if g.DNSListen != "" {
			args = append(args, "--dns-listen="+g.DNSListen)
		}
		if g.Forward {
			args = append(args, "--dns-forward")
		}
	}
	if s.Role == config.RoleControlPlane {
		args = append(args, "--publish=api=self")
	}
	return args
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
		// The address defaults to the default route's source address; the
		// data directory is where protokube mounts the member's volume.
		args := []string{"run", "--store=" + in.StoreURL, "--cluster-name=" + s.ClusterName, "--etcd-cluster=" + e.Name,
			"--data-dir=" + units.EtcdDataDir(e.Name), "--etcd-bin-dir-root=" + EtcdBinDirRoot, "--hosts-file=/etc/hosts",
			"--apiserver-client-cert-dir=/etc/kubernetes/pki/kube-apiserver/etcd-" + e.Name,
			fmt.Sprintf("--peer-port=%d", e.PeerPort), fmt.Sprintf("--client-port=%d", e.ClientPort), fmt.Sprintf("--manager-port=%d", e.ManagerPort)}
		svc := service(units.EtcdManager(e.Name, args), []string{units.EtcdManagerBin})
		// protokube starts it once the member's volume is mounted.
		svc.RestartOnly = true
		if err := c.Add(svc); err != nil {
			return err
		}
	}
	return nil
}

// EtcdBinDirRoot holds one v<version>/etcd per installed etcd version.
const EtcdBinDirRoot = "/opt/etcd"

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
