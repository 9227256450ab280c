package model

import (
	"fmt"
	"sort"
	"strings"

	"github.com/kopsnode/agents/cni"
	"github.com/kopsnode/agents/nodeup/kuberender"
	"github.com/kopsnode/agents/nodeup/tasks"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/paths"
	"github.com/kopsnode/agents/pkg/pki"
	units "github.com/kopsnode/agents/systemd-units"
)

// Builders of what every node runs: the container runtime, the kubelet,
// CNI binaries, kube-proxy and the images pods need without a registry.

type containerdBuilder struct{}

func (containerdBuilder) Name() string { return "containerd" }

// Paths of the container runtime.
const (
	ContainerdConfig   = "/etc/containerd/config.toml"
	ContainerdCertsDir = "/etc/containerd/certs.d"
	RuncBin            = "/usr/local/sbin/runc"
	ShimBin            = "/usr/local/bin/containerd-shim-runc-v2"
	CtrBin             = "/usr/local/bin/ctr"
	// ContainerdContentDir is the content store under containerd's default
	// root, which the rendered configuration keeps.
	ContainerdContentDir = "/var/lib/containerd/io.containerd.content.v1.content"
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
		return fmt.Errorf("spec.assets: containerd must be an archive (extract: true) with bin/containerd, bin/containerd-shim-runc-v2 and bin/ctr")
	}
	runc, err := c.Asset("runc")
	if err != nil {
		return err
	}
	for _, t := range []*tasks.Install{
		{Path: units.ContainerdBin, Asset: ctr, Member: "bin/containerd", Mode: 0o755},
		{Path: ShimBin, Asset: ctr, Member: "bin/containerd-shim-runc-v2", Mode: 0o755},
		{Path: CtrBin, Asset: ctr, Member: "bin/ctr", Mode: 0o755},
		{Path: RuncBin, Asset: runc, Mode: 0o755},
	} {
		if err := c.Add(t); err != nil {
			return err
		}
	}
	cfg, hosts, err := kuberender.ContainerdConfig(rt, kuberender.ContainerdPaths{
		Runc: RuncBin, CNIBinDir: cni.BinDir, CNIConfDir: cni.ConfDir, CertsDir: ContainerdCertsDir,
	})
	if err != nil {
		return err
	}
	if err := c.Add(file(ContainerdConfig, string(cfg), 0o644)); err != nil {
		return err
	}
	// containerd reads the hosts files on every pull: not a restart input.
	for _, h := range hosts {
		if err := c.Add(file(h.Path, string(h.Content), 0o644)); err != nil {
			return err
		}
	}
	return c.Add(service(units.Containerd(), []string{units.ContainerdBin, ShimBin, RuncBin, ContainerdConfig},
		tasks.FileID("/etc/modules-load.d/kubernetes.conf")))
}

type kubeletBuilder struct{}

func (kubeletBuilder) Name() string { return "kubelet" }

// Paths of the kubelet.
const (
	KubeletConfig     = "/var/lib/kubelet/config.yaml"
	KubeletKubeconfig = paths.KubeletKubeconfig
	// KubeletBootstrapKubeconfig holds the bootstrap token on nodes that
	// join by TLS bootstrap (workers).
	KubeletBootstrapKubeconfig = "/var/lib/kubelet/bootstrap-kubeconfig"
	// KubeletClientCert is the client certificate a TLS-bootstrapped
	// kubelet obtained and keeps rotated (the kubelet's own path).
	KubeletClientCert = "/var/lib/kubelet/pki/kubelet-client-current.pem"
	// KubeletClientCA is the kubernetes CA's public certificate: the kubelet
	// accepts the API server's client certificate (logs, exec) with it.
	KubeletClientCA = "/var/lib/kubelet/ca.crt"
	KubeletEnv      = "/etc/default/kubelet"
)

// tlsBootstrap says whether the node's kubelet joins by TLS bootstrap
// (workers: no CA key) rather than with a certificate nodeup issues from
// the store's CA (control-plane nodes, which read CA keys anyway).
func tlsBootstrap(s config.NodeConfigSpec) bool { return s.Role != config.RoleControlPlane }

func (kubeletBuilder) Build(in *Input, c *Collector) error {
	spec := in.Config.Spec
	a, err := c.Asset("kubelet")
	if err != nil {
		return err
	}
	if err := c.Add(&tasks.Install{Path: units.KubeletBin, Asset: a, Mode: 0o755}); err != nil {
		return err
	}
	bootstrap := tlsBootstrap(spec)
	kc, err := kuberender.KubeletConfigYAML(spec, kuberender.KubeletOptions{ClientCAFile: KubeletClientCA, RotateCertificates: bootstrap})
	if err != nil {
		return err
	}
	if err := c.Add(file(KubeletConfig, string(kc), 0o644)); err != nil {
		return err
	}
	if err := c.Add(file(KubeletEnv, KubeletEnvFile(spec), 0o644)); err != nil {
		return err
	}
	if err := c.Add(&tasks.CACertFile{Path: KubeletClientCA, CA: pki.CAKubernetes, Keystore: in.Keystore}); err != nil {
		return err
	}
	credentials := KubeletKubeconfig
	if bootstrap {
		credentials = KubeletBootstrapKubeconfig
		if err := c.Add(&tasks.BootstrapKubeconfig{
			Path: KubeletBootstrapKubeconfig, Server: spec.Kubelet.APIServer, CA: pki.CAKubernetes,
			Keystore: in.Keystore, Store: in.Store, Cluster: in.cluster(), Now: in.Now,
			JoinedCert: KubeletClientCert,
		}); err != nil {
			return err
		}
	} else {
		if err := c.Add(&tasks.Kubeconfig{
			Path:     KubeletKubeconfig,
			Server:   spec.Kubelet.APIServer,
			User:     "system:node:" + nodeName(in),
			Groups:   []string{"system:nodes"},
			CA:       pki.CAKubernetes,
			Keystore: in.Keystore,
			Now:      in.Now,
		}); err != nil {
			return err
		}
		// Workers join with the cluster's bootstrap token, which the
		// control plane creates.
		if err := c.Add(&tasks.BootstrapToken{Store: in.Store, Cluster: in.cluster()}); err != nil {
			return err
		}
	}
	// The images are in containerd before the kubelet starts, so that it
	// never tries to pull the sandbox image from a registry.
	needs := []string{tasks.UnitID("containerd.service")}
	for _, n := range imageAssets(spec) {
		needs = append(needs, tasks.ImageImportID(n))
	}
	return c.Add(service(units.Kubelet(KubeletEnv),
		[]string{units.KubeletBin, KubeletConfig, KubeletEnv, KubeletClientCA, credentials}, needs...))
}

// nodeName is the name the kubelet registers the node under: the hostname,
// lower-cased as the kubelet does. Its client certificate (CN
// system:node:<name>) and kube-proxy must use the same.
func nodeName(in *Input) string {
	h := strings.ToLower(strings.TrimSpace(in.Hostname))
	if h == "" {
		return "localhost"
	}
	return h
}

// KubeletEnvFile renders /etc/default/kubelet with the flags that are not in
// the configuration file.
func KubeletEnvFile(s config.NodeConfigSpec) string {
	args := []string{"--config=" + KubeletConfig, "--kubeconfig=" + KubeletKubeconfig}
	if tlsBootstrap(s) {
		// The kubelet writes --kubeconfig itself from the certificate its
		// CSR gets, and renews it (rotateCertificates).
		args = append(args, "--bootstrap-kubeconfig="+KubeletBootstrapKubeconfig)
	}
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

type kubeProxyBuilder struct{}

func (kubeProxyBuilder) Name() string { return "kube-proxy" }

// kubeProxyEnabled: with its asset, unless kubeProxy.enabled is false.
func kubeProxyEnabled(s config.NodeConfigSpec) bool {
	if s.KubeProxy != nil && s.KubeProxy.Enabled != nil && !*s.KubeProxy.Enabled {
		return false
	}
	return hasAsset(s, "kube-proxy")
}

func (kubeProxyBuilder) Build(in *Input, c *Collector) error {
	s := in.Config.Spec
	if !kubeProxyEnabled(s) {
		return nil
	}
	a, err := c.Asset("kube-proxy")
	if err != nil {
		return err
	}
	if err := c.Add(&tasks.Install{Path: units.KubeProxyBin, Asset: a, Mode: 0o755}); err != nil {
		return err
	}
	return c.Add(service(units.KubeProxy(KubeProxyArgs(in)), []string{units.KubeProxyBin}))
}

// KubeProxyArgs are kube-proxy's flags. It uses the kubelet's kubeconfig
// (group system:nodes, bound to system:node-proxier), so it needs no
// credentials of its own. conntrack-max-per-core=0 leaves the host's
// conntrack table size alone: the global sysctl cannot be set in a
// container.
func KubeProxyArgs(in *Input) []string {
	return []string{
		"--kubeconfig=" + KubeletKubeconfig,
		"--hostname-override=" + nodeName(in),
		"--cluster-cidr=" + in.Config.Spec.Networking.PodCIDR,
		"--proxy-mode=iptables",
		"--conntrack-max-per-core=0",
	}
}

type imagesBuilder struct{}

func (imagesBuilder) Name() string { return "images" }

// ImageAssetPrefix starts the names of the assets that are OCI image
// archives to import into containerd.
const ImageAssetPrefix = "image-"

// imageAssets returns the names of the image assets, sorted.
func imageAssets(s config.NodeConfigSpec) []string {
	var names []string
	for _, a := range s.Assets {
		if strings.HasPrefix(a.Name, ImageAssetPrefix) {
			names = append(names, a.Name)
		}
	}
	sort.Strings(names)
	return names
}

func (imagesBuilder) Build(in *Input, c *Collector) error {
	for _, n := range imageAssets(in.Config.Spec) {
		a, err := c.Asset(n)
		if err != nil {
			return err
		}
		if a.Extract {
			return fmt.Errorf("spec.assets: %s is an OCI image archive, imported as it is: remove extract: true", n)
		}
		if err := c.Add(&tasks.ImageImport{
			Asset: a, Ctr: CtrBin, Socket: kuberender.ContainerdSocket, ContentDir: ContainerdContentDir,
			Needs: []string{tasks.FileID(CtrBin), tasks.UnitID("containerd.service")},
		}); err != nil {
			return err
		}
	}
	return nil
}
