package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	pathpkg "path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Supported Kubernetes minor versions, inclusive.
const (
	MinKubernetesMinor = 28
	MaxKubernetesMinor = 37
)

// SupportedEtcdVersions returns the etcd minor versions a cluster may run,
// oldest first. Any patch release of these is accepted; etcd-manager runs
// the exact version named in the spec from its per-version binary directory.
func SupportedEtcdVersions() []string {
	return []string{"3.5", "3.6", "3.7"}
}

// IsSupportedEtcdVersion reports whether v is a full etcd version
// (MAJOR.MINOR.PATCH) of a supported minor version.
func IsSupportedEtcdVersion(v string) bool {
	m := etcdVersionRE.FindStringSubmatch(v)
	return m != nil && slices.Contains(SupportedEtcdVersions(), m[1]+"."+m[2])
}

var (
	dnsLabelRE     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	semverRE       = regexp.MustCompile(`^(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})(-[0-9A-Za-z.-]{1,64})?$`)
	etcdVersionRE  = regexp.MustCompile(`^(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})$`)
	sha256RE       = regexp.MustCompile(`^[0-9a-f]{64}$`)
	assetNameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	providerRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	sysctlRE       = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[A-Za-z0-9_-]+)+$`)
	kernelModuleRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	packageRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$`)
	flagNameRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,100}$`)
	labelNameRE    = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`)
	labelValueRE   = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$`)
	volumeTypeRE   = regexp.MustCompile(`^[A-Za-z0-9._-]{0,64}$`)
	registryHostRE = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?$`)
)

// Fixed lists, as functions so that nothing package-level can be modified.
func taintEffects() []string    { return []string{"NoSchedule", "PreferNoSchedule", "NoExecute"} }
func assetURLSchemes() []string { return []string{"http", "https", "file", "s3", "gs"} }
func storeURLSchemes() []string { return []string{"file", "s3", "gs"} }
func containerRuntimes() []string {
	return []string{"containerd"}
}

// Validate checks a *Cluster or a *NodeConfig, with defaults already
// applied, and returns every problem found as an *Errors, or nil.
func Validate(doc any) error {
	switch d := doc.(type) {
	case *Cluster:
		return d.Validate()
	case *NodeConfig:
		return d.Validate()
	}
	return &Errors{{Msg: fmt.Sprintf("cannot validate a %T; want *config.Cluster or *config.NodeConfig", doc)}}
}

// ValidateCluster is c.Validate().
func ValidateCluster(c *Cluster) error { return c.Validate() }

// ValidateNodeConfig is n.Validate().
func ValidateNodeConfig(n *NodeConfig) error { return n.Validate() }

// Validate checks the cluster spec, with defaults already applied, and
// returns every problem found as an *Errors, or nil.
func (c *Cluster) Validate() error {
	v := &validator{errs: &Errors{}}
	v.typeMeta(c.TypeMeta, KindCluster)
	v.dnsName("metadata.name", c.Metadata.Name, true)
	s := &c.Spec
	v.kubernetesVersion("spec.kubernetesVersion", s.KubernetesVersion)
	v.networking("spec.networking", &s.Networking)
	v.containerRuntime("spec.containerRuntime", &s.ContainerRuntime)
	if len(s.EtcdClusters) == 0 {
		v.add("spec.etcdClusters", `required: a cluster needs at least the "main" etcd cluster`)
	} else if !slices.ContainsFunc(s.EtcdClusters, func(e EtcdClusterSpec) bool { return e.Name == "main" }) {
		v.add("spec.etcdClusters", `an etcd cluster named "main" is required (it holds the Kubernetes objects)`)
	}
	ports := v.etcdClusters("spec.etcdClusters", s.EtcdClusters)
	v.volumeProvider("spec.volume", s.Volume, "spec.etcdClusters", s.EtcdClusters)
	if s.Gossip == nil && strings.HasSuffix(c.Metadata.Name, ".k8s.local") {
		v.add("spec.gossip", "required: a cluster named *.k8s.local has no DNS zone of its own and finds its nodes through gossip (write `gossip: {}` for the defaults)")
	} else {
		v.kubenetNeedsGossip("spec.gossip", &s.Networking, s.Gossip)
	}
	v.gossip("spec.gossip", s.Gossip, ports)
	v.clusterAssets("spec.assets", s.Assets)
	v.clusterKubelet("spec.kubelet", s.Kubelet)
	v.instanceGroups("spec.instanceGroups", s.InstanceGroups)
	return v.errs.err()
}

// Validate checks the node configuration, with defaults already applied, and
// returns every problem found as an *Errors, or nil.
func (n *NodeConfig) Validate() error {
	v := &validator{errs: &Errors{}}
	v.typeMeta(n.TypeMeta, KindNodeConfig)
	s := &n.Spec
	if n.Metadata.Name == "" {
		v.add("metadata.name", "required: the instance group's name")
	} else if !dnsLabelRE.MatchString(n.Metadata.Name) {
		v.add("metadata.name", fmt.Sprintf("%q is not a valid instance group name (lowercase letters, digits and '-', at most 63 characters)", n.Metadata.Name))
	}
	v.dnsName("spec.clusterName", s.ClusterName, true)
	switch s.Role {
	case RoleControlPlane, RoleNode:
	case "":
		v.add("spec.role", fmt.Sprintf("required: %q or %q", RoleControlPlane, RoleNode))
	default:
		v.add("spec.role", fmt.Sprintf("%q is not a role; must be %q or %q", s.Role, RoleControlPlane, RoleNode))
	}
	v.kubernetesVersion("spec.kubernetesVersion", s.KubernetesVersion)
	v.assets("spec.assets", s.Assets)
	v.containerRuntime("spec.containerRuntime", &s.ContainerRuntime)
	v.kubelet("spec.kubelet", &s.Kubelet)
	v.networking("spec.networking", &s.Networking)
	v.sysctls("spec.sysctls", s.Sysctls)
	v.uniqueMatching("spec.kernelModules", s.KernelModules, kernelModuleRE, "kernel module name")
	v.uniqueMatching("spec.packages", s.Packages, packageRE, "package name (name or name=version)")
	switch {
	case s.Role == RoleControlPlane && len(s.EtcdClusters) == 0:
		v.add("spec.etcdClusters", "required on a control-plane node: the etcd clusters it runs")
	case s.Role == RoleNode && len(s.EtcdClusters) > 0:
		v.add("spec.etcdClusters", "only control-plane nodes run etcd; remove it from a node configuration")
	}
	ports := v.etcdClusters("spec.etcdClusters", s.EtcdClusters)
	if s.Volume != nil && s.Role == RoleNode {
		v.add("spec.volume", "only control-plane nodes have etcd volumes; remove it from a node configuration")
	}
	v.volumeProvider("spec.volume", s.Volume, "spec.etcdClusters", s.EtcdClusters)
	v.gossip("spec.gossip", s.Gossip, ports)
	v.controlPlane("spec.controlPlane", s)
	return v.errs.err()
}

// validator collects problems.
type validator struct {
	errs *Errors
}

func (v *validator) add(path, msg string) { v.errs.add(path, msg) }

func (v *validator) typeMeta(tm TypeMeta, kind string) {
	if tm.APIVersion != APIVersion {
		v.add("apiVersion", fmt.Sprintf("%q is not supported; must be %q", tm.APIVersion, APIVersion))
	}
	if tm.Kind != kind {
		v.add("kind", fmt.Sprintf("expected %q, got %q", kind, tm.Kind))
	}
}

// dnsName checks a lowercase DNS name (RFC 1123 subdomain).
func (v *validator) dnsName(path, s string, required bool) {
	if s == "" {
		if required {
			v.add(path, "required: a DNS name such as example.k8s.local")
		}
		return
	}
	if !isDNSName(s) {
		v.add(path, fmt.Sprintf("%q is not a valid DNS name (lowercase labels of letters, digits and '-', separated by dots, at most 253 characters)", s))
	}
}

func isDNSName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !dnsLabelRE.MatchString(l) {
			return false
		}
	}
	return true
}

func (v *validator) kubernetesVersion(path, s string) {
	if s == "" {
		v.add(path, "required: a Kubernetes version such as 1.31.2")
		return
	}
	m := semverRE.FindStringSubmatch(s)
	if m == nil {
		v.add(path, fmt.Sprintf("%q is not a valid Kubernetes version (want MAJOR.MINOR.PATCH, for example 1.31.2)", s))
		return
	}
	minor, _ := strconv.Atoi(m[2])
	if m[1] != "1" || minor < MinKubernetesMinor || minor > MaxKubernetesMinor {
		v.add(path, fmt.Sprintf("%q is not a supported Kubernetes version (supported: 1.%d to 1.%d)", s, MinKubernetesMinor, MaxKubernetesMinor))
	}
}

// port checks a port number; 0 is reported as missing.
func (v *validator) port(path string, p int, why string) bool {
	switch {
	case p == 0:
		v.add(path, "required: "+why)
		return false
	case p < 1 || p > 65535:
		v.add(path, fmt.Sprintf("%d is not a port number (1 to 65535)", p))
		return false
	}
	return true
}

// portUse remembers which field claimed a port first.
type portUse map[int]string

func (v *validator) claim(ports portUse, path string, p int) {
	if first, taken := ports[p]; taken {
		v.add(path, fmt.Sprintf("port %d is already used by %s", p, first))
		return
	}
	ports[p] = path
}

// etcdClusters checks the etcd clusters and returns the ports they use.
func (v *validator) etcdClusters(path string, list []EtcdClusterSpec) portUse {
	ports := portUse{}
	names := map[string]int{}
	for i := range list {
		e := &list[i]
		p := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case e.Name == "":
			v.add(p+".name", `required: for example "main" or "events"`)
		case !dnsLabelRE.MatchString(e.Name):
			v.add(p+".name", fmt.Sprintf("%q is not a valid etcd cluster name (lowercase letters, digits and '-', at most 63 characters)", e.Name))
		default:
			if j, dup := names[e.Name]; dup {
				v.add(p+".name", fmt.Sprintf("%q is already the name of %s[%d]", e.Name, path, j))
			} else {
				names[e.Name] = i
			}
		}
		switch e.Members {
		case 1, 3, 5:
		case 0:
			v.add(p+".members", "required: 1, 3 or 5")
		default:
			v.add(p+".members", fmt.Sprintf("%d members is not supported; must be 1, 3 or 5", e.Members))
		}
		if err := ValidateEtcdVersion(e.Version); err != nil {
			v.add(p+".version", err.Error())
		}
		why := fmt.Sprintf("etcd cluster %q has no default ports (only main and events do)", e.Name)
		if v.port(p+".peerPort", e.PeerPort, why) {
			v.claim(ports, p+".peerPort", e.PeerPort)
		}
		if v.port(p+".clientPort", e.ClientPort, why) {
			v.claim(ports, p+".clientPort", e.ClientPort)
		}
		if v.port(p+".managerPort", e.ManagerPort, why) {
			v.claim(ports, p+".managerPort", e.ManagerPort)
		}
		if e.Volume.SizeGiB < 1 || e.Volume.SizeGiB > 16384 {
			v.add(p+".volume.sizeGiB", fmt.Sprintf("%d is out of range (1 to 16384)", e.Volume.SizeGiB))
		}
		if !volumeTypeRE.MatchString(e.Volume.Type) {
			v.add(p+".volume.type", fmt.Sprintf("%q is not a valid volume type", e.Volume.Type))
		}
		if e.Volume.IOPS < 0 {
			v.add(p+".volume.iops", fmt.Sprintf("%d is negative", e.Volume.IOPS))
		}
		if d := e.Volume.Device; d != "" && (!strings.HasPrefix(d, "/dev/") || pathpkg.Clean(d) != d || strings.ContainsAny(d, " \t\n,=")) {
			v.add(p+".volume.device", fmt.Sprintf("%q is not a clean device path under /dev/", d))
		}
		v.metalDiskChoice(p+".volume", e.Volume)
		v.duration(p+".backups.interval", e.Backups.Interval, time.Minute)
		if e.Backups.VerifyInterval != "" {
			v.duration(p+".backups.verifyInterval", e.Backups.VerifyInterval, MinVerifyInterval)
		}
		v.deltaInterval(p+".backups.deltaInterval", e.Backups.DeltaInterval)
		if e.Backups.Store != "" {
			v.storeURL(p+".backups.store", e.Backups.Store)
		}
		for _, r := range []struct {
			name string
			v    *int
		}{{"hourlyDays", e.Backups.Retention.HourlyDays}, {"dailyDays", e.Backups.Retention.DailyDays}} {
			if r.v != nil && (*r.v < 0 || *r.v > MaxRetentionDays) {
				v.add(p+".backups.retention."+r.name, fmt.Sprintf("%d is out of range (0 to %d)", *r.v, MaxRetentionDays))
			}
		}
	}
	return ports
}

// MinVerifyInterval is the shortest backups.verifyInterval: a test restore
// reads and restores a whole backup.
const MinVerifyInterval = time.Hour

// The bounds of a backups.deltaInterval other than 0 (no deltas): below a
// second every change is a store write of its own; above an hour the
// point-in-time recovery is no better than the full backups.
const (
	MinDeltaInterval = time.Second
	MaxDeltaInterval = time.Hour
)

// deltaInterval checks backups.deltaInterval: unset, 0 (deltas off), or a
// duration within [MinDeltaInterval, MaxDeltaInterval].
func (v *validator) deltaInterval(path, s string) {
	if s == "" {
		return
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		v.add(path, fmt.Sprintf("%q is not a Go duration (for example \"5s\", or \"0s\" for no deltas)", s))
	case d == 0:
	case d < MinDeltaInterval || d > MaxDeltaInterval:
		v.add(path, fmt.Sprintf("%s is out of range (0s for no deltas, or %s to %s)", d, MinDeltaInterval, MaxDeltaInterval))
	}
}

func (v *validator) duration(path, s string, atLeast time.Duration) {
	d, err := time.ParseDuration(s)
	switch {
	case s == "":
		v.add(path, "required: a duration such as 15m")
	case err != nil:
		v.add(path, fmt.Sprintf("%q is not a duration (for example 15m, 1h30m)", s))
	case d < atLeast:
		v.add(path, fmt.Sprintf("%s is shorter than the minimum of %s", s, strings.TrimSuffix(strings.TrimSuffix(atLeast.String(), "0s"), "0m")))
	}
}

func (v *validator) storeURL(path, s string) {
	u, err := url.Parse(s)
	if err != nil || !slices.Contains(storeURLSchemes(), u.Scheme) {
		v.add(path, fmt.Sprintf("%q is not a state store URL (file:///path, s3://bucket/prefix or gs://bucket/prefix)", s))
		return
	}
	if u.Scheme == "file" {
		if u.Host != "" || !strings.HasPrefix(u.Path, "/") {
			v.add(path, fmt.Sprintf("%q: a file URL needs an absolute path and no host (file:///path)", s))
		}
	} else if u.Host == "" {
		v.add(path, fmt.Sprintf("%q: the URL names no bucket", s))
	}
}

var partitionLabelRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,35}$`)

// metalDiskChoice checks the metal provider's disk choice of one etcd
// cluster: at most one of device, partitionLabel and serials.
func (v *validator) metalDiskChoice(path string, vol VolumeSpec) {
	n := 0
	for _, set := range []bool{vol.Device != "", vol.PartitionLabel != "", len(vol.Serials) > 0} {
		if set {
			n++
		}
	}
	if n > 1 {
		v.add(path, "set at most one of device, partitionLabel and serials: each chooses the disk on its own")
	}
	if l := vol.PartitionLabel; l != "" && !partitionLabelRE.MatchString(l) {
		v.add(path+".partitionLabel", fmt.Sprintf("%q is not a GPT partition name this provider accepts (letters, digits, '.', '_', '-', at most 36)", l))
	}
	seen := map[string]int{}
	for i, sn := range vol.Serials {
		p := fmt.Sprintf("%s.serials[%d]", path, i)
		switch {
		case strings.TrimSpace(sn) == "" || strings.TrimSpace(sn) != sn || len(sn) > 128 || strings.ContainsAny(sn, "/\t\n"):
			v.add(p, fmt.Sprintf("%q is not a disk serial number (no slashes, no leading or trailing spaces, at most 128 characters)", sn))
		default:
			if j, dup := seen[sn]; dup {
				v.add(p, fmt.Sprintf("%q is already %s.serials[%d]", sn, path, j))
			}
			seen[sn] = i
		}
	}
}

// volumeProvider checks the volume provider and that the etcd clusters'
// volume settings suit it. Slot names are "<etcd cluster>-<n>" (package
// volumes), which must stay a DNS label.
func (v *validator) volumeProvider(path string, vp *VolumeProviderSpec, etcdPath string, etcd []EtcdClusterSpec) {
	for i, e := range etcd {
		if len(e.Name) > 61 {
			v.add(fmt.Sprintf("%s[%d].name", etcdPath, i), fmt.Sprintf("%q is longer than 61 characters: member slot names (%s-1, ...) must be DNS labels", e.Name, e.Name))
		}
	}
	if vp == nil {
		return
	}
	switch vp.Provider {
	case VolumeProviderMetal:
		if vp.AWS != nil {
			v.add(path+".aws", fmt.Sprintf("only used when provider is %q", VolumeProviderAWS))
		}
		if m := vp.Metal; m != nil {
			for i, pat := range m.Scan {
				if _, err := pathpkg.Match(pat, ""); err != nil || !strings.HasPrefix(pat, "/") {
					v.add(fmt.Sprintf("%s.metal.scan[%d]", path, i), fmt.Sprintf("%q is not an absolute glob pattern", pat))
				}
			}
		}
	case VolumeProviderAWS:
		if vp.Metal != nil {
			v.add(path+".metal", fmt.Sprintf("only used when provider is %q", VolumeProviderMetal))
		}
		if a := vp.AWS; a != nil {
			if a.Region != "" && !dnsLabelRE.MatchString(a.Region) {
				v.add(path+".aws.region", fmt.Sprintf("%q is not a region name (for example eu-west-1)", a.Region))
			}
			for _, f := range []struct{ name, v string }{{"ec2Endpoint", a.EC2Endpoint}, {"imdsEndpoint", a.IMDSEndpoint}} {
				if f.v == "" {
					continue
				}
				if u, err := url.Parse(f.v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					v.add(path+".aws."+f.name, fmt.Sprintf("%q is not an http:// or https:// URL", f.v))
				}
			}
		}
		for i, e := range etcd {
			if e.Volume.Device != "" || e.Volume.PartitionLabel != "" || len(e.Volume.Serials) > 0 {
				v.add(fmt.Sprintf("%s[%d].volume", etcdPath, i), fmt.Sprintf("device, partitionLabel and serials choose disks of the %q provider; the %q provider creates and finds its volumes by tags", VolumeProviderMetal, VolumeProviderAWS))
			}
		}
	default:
		v.add(path+".provider", fmt.Sprintf("%q is not a volume provider; must be %q or %q", vp.Provider, VolumeProviderMetal, VolumeProviderAWS))
	}
}

// kubenetNeedsGossip: in kubenet mode nodes publish their pod ranges over
// gossip and route to each other's (protokube, package protokube/podnet),
// so a cluster without gossip would have no pod network beyond each node.
// It is checked on the cluster spec, not on node configurations: the
// reduced configuration copies that protokube's commands read carry no
// gossip block.
func (v *validator) kubenetNeedsGossip(path string, n *NetworkingSpec, g *GossipSpec) {
	if n.Mode == NetworkingKubenet && g == nil {
		v.add(path, "required when networking.mode is \"kubenet\": nodes publish their pod ranges over gossip and route to each other's (write `gossip: {}` for the defaults)")
	}
}

func (v *validator) gossip(path string, g *GossipSpec, ports portUse) {
	if g == nil {
		return
	}
	if v.port(path+".port", g.Port, "the memberlist port") {
		v.claim(ports, path+".port", g.Port)
	}
	switch g.Seeds {
	case SeedsAWS:
		// The daemon's EC2 provider needs instance tags, a region and
		// cloud credentials on every node; the configuration carries none
		// of them, so the rendered unit could never start. Refused until
		// it does.
		v.add(path+".seeds", fmt.Sprintf("%q is not supported in a configuration yet (nodeup has no instance tags or region to give protokube, and workers would need EC2 credentials); use %q: every node finds the others through the seed registry in the state store", SeedsAWS, SeedsStore))
	case SeedsStore:
		if len(g.StaticSeeds) > 0 {
			v.add(path+".staticSeeds", fmt.Sprintf("only used when seeds is %q", SeedsStatic))
		}
	case SeedsStatic:
		if len(g.StaticSeeds) == 0 {
			v.add(path+".staticSeeds", fmt.Sprintf("required when seeds is %q: host:port of one or more members", SeedsStatic))
		}
		for i, s := range g.StaticSeeds {
			v.hostPort(fmt.Sprintf("%s.staticSeeds[%d]", path, i), s, false)
		}
	default:
		v.add(path+".seeds", fmt.Sprintf("%q is not a seed provider; must be %q, %q or %q", g.Seeds, SeedsStore, SeedsStatic, SeedsAWS))
	}
	v.hostPort(path+".dnsListen", g.DNSListen, true)
}

// hostPort checks host:port; ipOnly requires the host to be an IP address.
func (v *validator) hostPort(path, s string, ipOnly bool) {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		v.add(path, fmt.Sprintf("%q is not host:port", s))
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		v.add(path, fmt.Sprintf("%q: %q is not a port number (1 to 65535)", s, port))
	}
	if _, err := netip.ParseAddr(host); err != nil {
		if ipOnly {
			v.add(path, fmt.Sprintf("%q: %q is not an IP address", s, host))
		} else if !isDNSName(strings.ToLower(host)) {
			v.add(path, fmt.Sprintf("%q: %q is neither an IP address nor a DNS name", s, host))
		}
	}
}

func (v *validator) networking(path string, n *NetworkingSpec) {
	switch n.Mode {
	case NetworkingCNI:
		switch {
		case n.Provider == "":
			v.add(path+".provider", `required when mode is "cni": the CNI provider, for example "bridge", "flannel", "calico" or "cilium"`)
		case !providerRE.MatchString(n.Provider):
			v.add(path+".provider", fmt.Sprintf("%q is not a valid provider name", n.Provider))
		}
	case NetworkingKubenet, NetworkingExternal:
		if n.Provider != "" {
			v.add(path+".provider", fmt.Sprintf("only used when mode is %q", NetworkingCNI))
		}
	default:
		v.add(path+".mode", fmt.Sprintf("%q is not a networking mode; must be %q, %q or %q", n.Mode, NetworkingKubenet, NetworkingCNI, NetworkingExternal))
	}
	pod, podOK := v.cidr(path+".podCIDR", n.PodCIDR)
	svc, svcOK := v.cidr(path+".serviceCIDR", n.ServiceCIDR)
	nonMasq, nmOK := v.cidr(path+".nonMasqueradeCIDR", n.NonMasqueradeCIDR)
	if podOK && svcOK && pod.Overlaps(svc) {
		v.add(path+".serviceCIDR", fmt.Sprintf("%s overlaps podCIDR %s", svc, pod))
	}
	if nmOK {
		if podOK && !containsPrefix(nonMasq, pod) {
			v.add(path+".podCIDR", fmt.Sprintf("%s is not inside nonMasqueradeCIDR %s", pod, nonMasq))
		}
		if svcOK && !containsPrefix(nonMasq, svc) {
			v.add(path+".serviceCIDR", fmt.Sprintf("%s is not inside nonMasqueradeCIDR %s", svc, nonMasq))
		}
	}
	if n.MTU != 0 && (n.MTU < 576 || n.MTU > 9216) {
		v.add(path+".mtu", fmt.Sprintf("%d is out of range (576 to 9216, or 0 for the interface's MTU)", n.MTU))
	}
}

func containsPrefix(outer, inner netip.Prefix) bool {
	return outer.Addr().Is4() == inner.Addr().Is4() && outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

// cidr parses a CIDR that must be in canonical form.
func (v *validator) cidr(path, s string) (netip.Prefix, bool) {
	if s == "" {
		v.add(path, "required: a CIDR such as 100.96.0.0/11")
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		v.add(path, fmt.Sprintf("%q is not a CIDR (for example 100.96.0.0/11)", s))
		return netip.Prefix{}, false
	}
	if p.Masked() != p {
		v.add(path, fmt.Sprintf("%q has host bits set; did you mean %s?", s, p.Masked()))
		return netip.Prefix{}, false
	}
	return p, true
}

func (v *validator) containerRuntime(path string, r *ContainerRuntimeSpec) {
	switch {
	case r.Name == "docker":
		v.add(path+".name", `"docker" is not supported yet (nodeup installs and configures containerd only); use "containerd"`)
	case !slices.Contains(containerRuntimes(), r.Name):
		v.add(path+".name", fmt.Sprintf("%q is not a supported container runtime; must be %q", r.Name, "containerd"))
	}
	if r.Version != "" {
		if _, err := ContainerdMajor(r.Version); err != nil {
			v.add(path+".version", err.Error())
		}
	}
	if r.SandboxImage == "" || strings.IndexFunc(r.SandboxImage, unicode.IsSpace) >= 0 || strings.IndexFunc(r.SandboxImage, unicode.IsControl) >= 0 {
		v.add(path+".sandboxImage", fmt.Sprintf("%q is not an image reference", r.SandboxImage))
	}
	if r.SystemdCgroup == nil {
		v.add(path+".systemdCgroup", "required: true or false")
	}
	for _, host := range sortedKeys(r.RegistryMirrors) {
		p := path + ".registryMirrors[" + strconv.Quote(host) + "]"
		if !registryHostRE.MatchString(host) {
			v.add(p, fmt.Sprintf("%q is not a registry host (for example docker.io or registry.example.com:5000)", host))
		}
		mirrors := r.RegistryMirrors[host]
		if len(mirrors) == 0 {
			v.add(p, "needs at least one mirror URL")
		}
		for i, m := range mirrors {
			u, err := url.Parse(m)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				v.add(fmt.Sprintf("%s[%d]", p, i), fmt.Sprintf("%q is not an http or https URL", m))
			}
		}
	}
}

func (v *validator) kubelet(path string, k *KubeletSpec) {
	if u, err := url.Parse(k.APIServer); err != nil || u.Scheme != "https" || u.Host == "" || u.Path != "" && u.Path != "/" {
		v.add(path+".apiServer", fmt.Sprintf("%q is not an https URL of the API server (for example https://api.internal.example.k8s.local)", k.APIServer))
	}
	if _, err := netip.ParseAddr(k.ClusterDNS); err != nil {
		v.add(path+".clusterDNS", fmt.Sprintf("%q is not an IP address", k.ClusterDNS))
	}
	v.dnsName(path+".clusterDomain", k.ClusterDomain, true)
	if k.ResolvConf != "" && (!strings.HasPrefix(k.ResolvConf, "/") || strings.ContainsAny(k.ResolvConf, "\n\r\x00")) {
		v.add(path+".resolvConf", fmt.Sprintf("%q is not an absolute file path", k.ResolvConf))
	}
	if k.MaxPods < 1 || k.MaxPods > 1024 {
		v.add(path+".maxPods", fmt.Sprintf("%d is out of range (1 to 1024)", k.MaxPods))
	}
	v.evictionHard(path+".evictionHard", k.EvictionHard)
	for _, key := range sortedKeys(k.NodeLabels) {
		p := path + ".nodeLabels[" + strconv.Quote(key) + "]"
		if !isLabelKey(key) {
			v.add(p, fmt.Sprintf("%q is not a valid label key ([prefix/]name, name of at most 63 letters, digits, '-', '_', '.')", key))
		}
		if val := k.NodeLabels[key]; !labelValueRE.MatchString(val) {
			v.add(p, fmt.Sprintf("%q is not a valid label value (at most 63 letters, digits, '-', '_', '.')", val))
		}
	}
	for i, t := range k.Taints {
		if msg := taintProblem(t); msg != "" {
			v.add(fmt.Sprintf("%s.taints[%d]", path, i), msg)
		}
	}
	for _, key := range sortedKeys(k.ExtraArgs) {
		p := path + ".extraArgs[" + strconv.Quote(key) + "]"
		if !flagNameRE.MatchString(key) {
			v.add(p, fmt.Sprintf("%q is not a flag name (write it without the leading --)", key))
		}
		if strings.ContainsAny(k.ExtraArgs[key], "\n\r\x00") {
			v.add(p, "value contains a line break or NUL")
		}
	}
}

var (
	nodeupVersionRE = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$`)
	imageNameRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
)

// reservedImages are the image tarballs every rendered node gets already.
func reservedImages() []string { return []string{"pause", "coredns"} }

func (v *validator) clusterAssets(path string, a *ClusterAssetsSpec) {
	if a == nil {
		return
	}
	if a.Mirror == "" {
		v.add(path+".mirror", "required: the base URL of the release mirror, for example https://mirror.example.com/kopsnode-releases")
	} else if u, err := url.Parse(a.Mirror); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		// Nodes and the userdata script download from it: http(s) only.
		v.add(path+".mirror", fmt.Sprintf("%q is not an http or https URL", a.Mirror))
	} else if u.Host == "" {
		v.add(path+".mirror", fmt.Sprintf("%q names no host", a.Mirror))
	} else if u.RawQuery != "" || u.Fragment != "" {
		v.add(path+".mirror", fmt.Sprintf("%q: a base URL has no query or fragment", a.Mirror))
	}
	if a.NodeupVersion != "" && !nodeupVersionRE.MatchString(a.NodeupVersion) {
		v.add(path+".nodeupVersion", fmt.Sprintf("%q is not a release version (letters, digits, '.', '+', '_', '-')", a.NodeupVersion))
	}
	seen := map[string]int{}
	for i, name := range a.AdditionalImages {
		p := fmt.Sprintf("%s.additionalImages[%d]", path, i)
		switch j, dup := seen[name]; {
		case !imageNameRE.MatchString(name):
			v.add(p, fmt.Sprintf("%q is not an image tarball name (lowercase letters, digits, '.', '_', '-'; the mirror holds images/<name>.tar)", name))
		case slices.Contains(reservedImages(), name):
			v.add(p, fmt.Sprintf("%q is already every node's (from the version table)", name))
		case dup:
			v.add(p, fmt.Sprintf("%q is already listed at %s.additionalImages[%d]", name, path, j))
		default:
			seen[name] = i
		}
	}
}

func (v *validator) clusterKubelet(path string, k *ClusterKubeletSpec) {
	if k == nil {
		return
	}
	if k.MaxPods != 0 && (k.MaxPods < 1 || k.MaxPods > 1024) {
		v.add(path+".maxPods", fmt.Sprintf("%d is out of range (1 to 1024)", k.MaxPods))
	}
	v.dnsName(path+".clusterDomain", k.ClusterDomain, false)
	if k.ResolvConf != "" && (!strings.HasPrefix(k.ResolvConf, "/") || strings.ContainsAny(k.ResolvConf, "\n\r\x00")) {
		v.add(path+".resolvConf", fmt.Sprintf("%q is not an absolute file path", k.ResolvConf))
	}
	v.extraArgs(path+".extraArgs", k.ExtraArgs)
	v.evictionHard(path+".evictionHard", k.EvictionHard)
}

// evictionSignals are the kubelet's hard eviction signals on Linux.
var evictionSignals = map[string]bool{
	"memory.available": true, "nodefs.available": true, "nodefs.inodesFree": true,
	"imagefs.available": true, "imagefs.inodesFree": true,
	"containerfs.available": true, "containerfs.inodesFree": true, "pid.available": true,
}

// evictionThresholdRE is a threshold: a percentage (0 to 100, exclusive of
// 100) or a non-negative quantity with an optional binary or decimal
// suffix, as the kubelet parses them.
var evictionThresholdRE = regexp.MustCompile(`^(([0-9]{1,2}(\.[0-9]+)?%)|([0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?))$`)

func (v *validator) evictionHard(path string, m map[string]string) {
	for _, key := range sortedKeys(m) {
		p := path + "[" + strconv.Quote(key) + "]"
		if !evictionSignals[key] {
			v.add(p, fmt.Sprintf("%q is not a kubelet eviction signal (one of %s)", key, strings.Join(sortedKeys(evictionSignals), ", ")))
		}
		if !evictionThresholdRE.MatchString(m[key]) {
			v.add(p, fmt.Sprintf("%q is not a threshold (a quantity such as 1Gi or 500Mi, or a percentage below 100 such as 10%%)", m[key]))
		}
	}
}

func (v *validator) instanceGroups(path string, groups []InstanceGroupSpec) {
	names := map[string]int{}
	controlPlanes := 0
	for i := range groups {
		g := &groups[i]
		p := fmt.Sprintf("%s[%d]", path, i)
		switch j, dup := names[g.Name]; {
		case g.Name == "":
			v.add(p+".name", `required: for example "control-plane" or "nodes"`)
		case !dnsLabelRE.MatchString(g.Name):
			v.add(p+".name", fmt.Sprintf("%q is not a valid instance group name (lowercase letters, digits and '-', at most 63 characters)", g.Name))
		case dup:
			v.add(p+".name", fmt.Sprintf("%q is already the name of %s[%d]", g.Name, path, j))
		default:
			names[g.Name] = i
		}
		switch g.Role {
		case RoleControlPlane:
			controlPlanes++
		case RoleNode:
		case "":
			v.add(p+".role", fmt.Sprintf("required: %q or %q", RoleControlPlane, RoleNode))
		default:
			v.add(p+".role", fmt.Sprintf("%q is not a role; must be %q or %q", g.Role, RoleControlPlane, RoleNode))
		}
		for j, t := range g.Taints {
			if msg := taintProblem(t); msg != "" {
				v.add(fmt.Sprintf("%s.taints[%d]", p, j), msg)
			}
		}
		v.nodeLabels(p+".nodeLabels", g.NodeLabels)
	}
	if len(groups) > 0 && controlPlanes == 0 {
		v.add(path, fmt.Sprintf("needs an instance group with role %q: the control plane runs there", RoleControlPlane))
	}
}

func (v *validator) nodeLabels(path string, labels map[string]string) {
	for _, key := range sortedKeys(labels) {
		p := path + "[" + strconv.Quote(key) + "]"
		if !isLabelKey(key) {
			v.add(p, fmt.Sprintf("%q is not a valid label key ([prefix/]name, name of at most 63 letters, digits, '-', '_', '.')", key))
		}
		if val := labels[key]; !labelValueRE.MatchString(val) {
			v.add(p, fmt.Sprintf("%q is not a valid label value (at most 63 letters, digits, '-', '_', '.')", val))
		}
	}
}

func isLabelKey(key string) bool {
	prefix, name, hasPrefix := strings.Cut(key, "/")
	if !hasPrefix {
		name = prefix
	} else if !isDNSName(prefix) {
		return false
	}
	return labelNameRE.MatchString(name)
}

// taintProblem checks key[=value]:Effect and says what is wrong.
func taintProblem(t string) string {
	kv, effect, ok := strings.Cut(t, ":")
	if !ok {
		return fmt.Sprintf("%q is not a taint (key[=value]:Effect)", t)
	}
	key, val, _ := strings.Cut(kv, "=")
	if !isLabelKey(key) || !labelValueRE.MatchString(val) {
		return fmt.Sprintf("%q is not a taint (key[=value]:Effect)", t)
	}
	if !slices.Contains(taintEffects(), effect) {
		return fmt.Sprintf("%q: effect %q must be one of %s", t, effect, strings.Join(taintEffects(), ", "))
	}
	return ""
}

func (v *validator) assets(path string, assets []Asset) {
	names := map[string]int{}
	for i := range assets {
		a := &assets[i]
		p := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case a.Name == "":
			v.add(p+".name", `required: for example "kubelet"`)
		case !assetNameRE.MatchString(a.Name):
			v.add(p+".name", fmt.Sprintf("%q is not a valid asset name (lowercase letters, digits, '.', '_', '-')", a.Name))
		default:
			if j, dup := names[a.Name]; dup {
				v.add(p+".name", fmt.Sprintf("%q is already the name of %s[%d]", a.Name, path, j))
			} else {
				names[a.Name] = i
			}
		}
		switch {
		case a.SHA256 == "":
			v.add(p+".sha256", "required: the hex sha256 of the file")
		case sha256RE.MatchString(strings.ToLower(a.SHA256)) && !sha256RE.MatchString(a.SHA256):
			v.add(p+".sha256", fmt.Sprintf("%q must be lowercase hex", a.SHA256))
		case !sha256RE.MatchString(a.SHA256):
			v.add(p+".sha256", fmt.Sprintf("%q is not a sha256 (64 lowercase hex digits)", a.SHA256))
		}
		if len(a.URLs) == 0 {
			v.add(p+".urls", "required: at least one URL to download the asset from")
		}
		seen := map[string]int{}
		for j, s := range a.URLs {
			up := fmt.Sprintf("%s.urls[%d]", p, j)
			if k, dup := seen[s]; dup {
				v.add(up, fmt.Sprintf("duplicate of %s.urls[%d]", p, k))
				continue
			}
			seen[s] = j
			u, err := url.Parse(s)
			switch {
			case err != nil || !slices.Contains(assetURLSchemes(), u.Scheme):
				v.add(up, fmt.Sprintf("%q is not a URL with scheme %s", s, strings.Join(assetURLSchemes(), ", ")))
			case u.Scheme == "file" && (u.Host != "" || !strings.HasPrefix(u.Path, "/")):
				v.add(up, fmt.Sprintf("%q: a file URL needs an absolute path and no host (file:///path)", s))
			case u.Scheme != "file" && u.Host == "":
				v.add(up, fmt.Sprintf("%q names no host or bucket", s))
			}
		}
	}
}

func (v *validator) sysctls(path string, m map[string]string) {
	for _, name := range sortedKeys(m) {
		p := path + "[" + strconv.Quote(name) + "]"
		if !sysctlRE.MatchString(name) || len(name) > 256 {
			v.add(p, fmt.Sprintf("%q is not a sysctl name (dotted, for example net.ipv4.ip_forward)", name))
		}
		if val := m[name]; val == "" || strings.ContainsAny(val, "\n\r\x00") {
			v.add(p, fmt.Sprintf("%q is not a sysctl value (non-empty, one line)", val))
		}
	}
}

func (v *validator) uniqueMatching(path string, list []string, re *regexp.Regexp, what string) {
	seen := map[string]int{}
	for i, s := range list {
		p := fmt.Sprintf("%s[%d]", path, i)
		if !re.MatchString(s) {
			v.add(p, fmt.Sprintf("%q is not a valid %s", s, what))
			continue
		}
		if j, dup := seen[s]; dup {
			v.add(p, fmt.Sprintf("%q is already listed at %s[%d]", s, path, j))
			continue
		}
		seen[s] = i
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
