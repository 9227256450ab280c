package render

import (
	"fmt"
	"slices"
	"strings"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/pki"
	"github.com/kopsnode/agents/pkg/releases"
)

// Plan is everything a cluster spec puts into the store, computed without
// I/O by BuildPlan.
type Plan struct {
	Cluster string
	// Groups are the node configurations, in the order of
	// spec.instanceGroups.
	Groups []Group
	// EtcdSpecs are the etcd-manager control specs, one per etcd cluster.
	EtcdSpecs []EtcdSpec
	// CAs and SigningKeys are created in the keystore <cluster>/pki when
	// absent, with the same calls (and so the same keys) the control plane
	// would make on its first boot.
	CAs         []string
	SigningKeys []string
	// GossipKeyring says the cluster uses gossip, so its keyring is
	// created when absent.
	GossipKeyring bool
	// Nodeup is the binary the userdata installs, pinned.
	Nodeup Pinned
}

// Group is one instance group's node configuration, rendered.
type Group struct {
	Name   string
	Role   config.Role
	Config *config.NodeConfig
	// Data is the document written to the store; Hash its sha256, which
	// the group's userdata pins.
	Data []byte
	Hash string
}

// EtcdSpec is one etcd cluster's desired spec in its control area.
type EtcdSpec struct {
	Layout control.Layout
	Spec   control.Spec
}

// Pinned is a file on the mirror with the sha256 it must have.
type Pinned struct {
	URL    string `json:"url"`
	SHA256 string `json:"sha256"`
}

// Inputs are what BuildPlan needs besides the cluster spec: the release and
// its files, the mirror and the hash of every file on it.
type Inputs struct {
	// Source names the cluster file in errors.
	Source  string
	Release releases.Release
	// Files are the release's files for this cluster (FilesFor).
	Files []releases.File
	// KopsnodeVersion is the release of nodeup, protokube and etcd-manager.
	KopsnodeVersion string
	// Mirror is the base URL, without a trailing slash.
	Mirror string
	// SHA256 maps a file's mirror path to its hash.
	SHA256 map[string]string
	// SandboxImage is the pause image containerd runs; empty means the
	// release's.
	SandboxImage string
}

// fieldError names the cluster file and the field.
func fieldError(source, path, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %s", source, path, fmt.Sprintf(format, args...))
}

// FilesFor returns the release files a cluster's nodes download (with etcd
// at the versions its etcd clusters name, and its additional images) and
// nodeup. It checks that the release allows every etcd version, naming the
// field.
func FilesFor(c *config.Cluster, source string, rel releases.Release, kopsnodeVersion string) ([]releases.File, error) {
	var versions []string
	for i, e := range c.Spec.EtcdClusters {
		if !rel.AllowsEtcd(e.Version) {
			return nil, fieldError(source, fmt.Sprintf("spec.etcdClusters[%d].version", i), "etcd %q is not allowed with Kubernetes %s by the version table (allowed: %s)", e.Version, rel.Kubernetes, strings.Join(rel.Etcd, ", "))
		}
		versions = append(versions, e.Version)
	}
	files, err := rel.Files(kopsnodeVersion, versions)
	if err != nil {
		return nil, fieldError(source, "spec.assets.nodeupVersion", "%v", err)
	}
	if a := c.Spec.Assets; a != nil {
		for _, name := range a.AdditionalImages {
			files = append(files, releases.ImageFile(releases.Image{Name: name}))
		}
	}
	return files, nil
}

// URL is a file's URL on the mirror.
func URL(mirror, rel string) string { return strings.TrimSuffix(mirror, "/") + "/" + rel }

// BuildPlan renders the node configuration of every instance group and the
// etcd specs, and lists the secrets, for a validated cluster spec (defaults
// applied). Every node configuration it returns passes
// config.ParseNodeConfig.
func BuildPlan(c *config.Cluster, in Inputs) (*Plan, error) {
	name := c.Metadata.Name
	p := &Plan{Cluster: name, GossipKeyring: c.Spec.Gossip != nil}
	nodeup := releases.NodeupFile(in.KopsnodeVersion)
	p.Nodeup = Pinned{URL: URL(in.Mirror, nodeup.Path), SHA256: in.SHA256[nodeup.Path]}
	if p.Nodeup.SHA256 == "" {
		return nil, fmt.Errorf("no sha256 for %s", p.Nodeup.URL)
	}
	for _, g := range c.Spec.InstanceGroups {
		grp, err := buildGroup(c, g, in)
		if err != nil {
			return nil, err
		}
		p.Groups = append(p.Groups, grp)
	}
	p.CAs = []string{pki.CAKubernetes, pki.CAFrontProxy, pki.CAEtcdClients}
	for _, e := range c.Spec.EtcdClusters {
		p.EtcdSpecs = append(p.EtcdSpecs, EtcdSpec{
			Layout: control.Layout{Cluster: name, EtcdCluster: e.Name},
			Spec:   control.Spec{MemberCount: e.Members, EtcdVersion: e.Version},
		})
		p.CAs = append(p.CAs, pki.CAEtcdPeers(e.Name), pki.CAEtcdManager(e.Name))
	}
	p.SigningKeys = []string{pki.SigningKeyServiceAccount}
	return p, nil
}

// buildGroup is a group's node configuration: the cluster's settings, the
// group's role, taints and labels, and the assets of its role pinned from
// the mirror. Control-plane kubelets talk to the API server on their own
// machine; workers to the API name gossip publishes.
func buildGroup(c *config.Cluster, g config.InstanceGroupSpec, in Inputs) (Group, error) {
	n := config.NewNodeConfig(c, g.Name, g.Role)
	s := &n.Spec
	s.ContainerRuntime.Version = in.Release.Containerd
	s.ContainerRuntime.SandboxImage = in.SandboxImage
	if s.ContainerRuntime.SandboxImage == "" {
		s.ContainerRuntime.SandboxImage = in.Release.Pause.Ref
	}
	if k := c.Spec.Kubelet; k != nil {
		s.Kubelet.FailCgroupV1 = k.FailCgroupV1
		if k.MaxPods != 0 {
			s.Kubelet.MaxPods = k.MaxPods
		}
		if k.ClusterDomain != "" {
			s.Kubelet.ClusterDomain = k.ClusterDomain
		}
		s.Kubelet.ResolvConf = k.ResolvConf
		s.Kubelet.ExtraArgs = copyMap(k.ExtraArgs)
		s.Kubelet.EvictionHard = copyMap(k.EvictionHard)
	}
	s.Kubelet.Taints = slices.Clone(g.Taints)
	s.Kubelet.NodeLabels = copyMap(g.NodeLabels)
	if g.Role == config.RoleControlPlane {
		s.Kubelet.APIServer = config.DefaultControlPlaneAPIServer
	} else {
		s.Kubelet.APIServer = "https://" + config.DefaultAPIServerName(c.Metadata.Name)
	}
	for _, f := range in.Files {
		if f.ControlPlane && g.Role != config.RoleControlPlane {
			continue
		}
		sum := in.SHA256[f.Path]
		if sum == "" {
			return Group{}, fmt.Errorf("no sha256 for %s", URL(in.Mirror, f.Path))
		}
		s.Assets = append(s.Assets, config.Asset{Name: f.Asset, SHA256: sum, URLs: []string{URL(in.Mirror, f.Path)}, Extract: f.Extract})
	}
	data, err := config.Marshal(n)
	if err != nil {
		return Group{}, fmt.Errorf("instance group %s: %w", g.Name, err)
	}
	key := config.NodeConfigKey(c.Metadata.Name, g.Name)
	// What nodes will read must pass nodeup's own validation; a cluster
	// spec that passed its own but yields an invalid node configuration is
	// named here, with the field.
	if _, err := config.ParseNodeConfig(data, key); err != nil {
		return Group{}, fmt.Errorf("%s: instance group %s: the rendered node configuration is invalid: %w", in.Source, g.Name, err)
	}
	return Group{Name: g.Name, Role: g.Role, Config: n, Data: data, Hash: config.FileHash(data)}, nil
}

func copyMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
