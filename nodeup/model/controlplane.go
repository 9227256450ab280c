package model

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/kopsnode/agents/etcd-manager/runconfig"
	"github.com/kopsnode/agents/nodeup/tasks"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/paths"
	"github.com/kopsnode/agents/pkg/pki"
	units "github.com/kopsnode/agents/systemd-units"
)

// The control plane's files on a control-plane node. kube-apiserver,
// kube-controller-manager and kube-scheduler run as systemd units
// (docs/control-plane.md says why not static pods).
const (
	PKIDir = "/etc/kubernetes/pki"
	// CACert and CAKey are the kubernetes CA; the key is on disk for
	// kube-controller-manager's CSR signer (kubelet client certificates of
	// TLS-bootstrapped nodes).
	CACert                     = PKIDir + "/ca.crt"
	CAKey                      = PKIDir + "/ca.key"
	APIServerCert              = PKIDir + "/apiserver.crt"
	APIServerKey               = PKIDir + "/apiserver.key"
	APIServerKubeletClientCert = PKIDir + "/apiserver-kubelet-client.crt"
	APIServerKubeletClientKey  = PKIDir + "/apiserver-kubelet-client.key"
	FrontProxyCACert           = PKIDir + "/front-proxy-ca.crt"
	FrontProxyClientCert       = PKIDir + "/front-proxy-client.crt"
	FrontProxyClientKey        = PKIDir + "/front-proxy-client.key"
	ServiceAccountKey          = PKIDir + "/sa.key"
	ServiceAccountPub          = PKIDir + "/sa.pub"
	// APIServerEtcdClientDir is where the main etcd cluster's etcd-manager
	// keeps kube-apiserver's etcd client certificate (its
	// --apiserver-client-cert-dir). One directory serves main and events:
	// etcd-clients-ca is one CA per cluster, trusted by the client port of
	// every etcd cluster, and it signs every etcd serving certificate.
	APIServerEtcdClientDir = PKIDir + "/kube-apiserver/etcd"

	AdminKubeconfig             = paths.AdminKubeconfig
	ControllerManagerKubeconfig = "/etc/kubernetes/controller-manager.conf"
	SchedulerKubeconfig         = "/etc/kubernetes/scheduler.conf"

	// APIServerPort is the API server's secure port on every address.
	APIServerPort = 443
	// LocalAPIServer is how the components on a control-plane node reach
	// their own API server.
	LocalAPIServer = "https://127.0.0.1:443"

	// FrontProxyClientCN is the user the API server presents to aggregated
	// API servers; they accept only this name (--requestheader-allowed-names).
	FrontProxyClientCN = "front-proxy-client"
	// AdminUser is the operator's user in admin.conf.
	AdminUser = "kubernetes-admin"
)

// The etcd client files etcd-manager writes into APIServerEtcdClientDir
// (etcd-manager/manager: APIServerClientCertFile and friends).
const (
	etcdClientCert = APIServerEtcdClientDir + "/etcd-client.crt"
	etcdClientKey  = APIServerEtcdClientDir + "/etcd-client.key"
	etcdClientCA   = APIServerEtcdClientDir + "/etcd-ca.crt"
)

// apiServerEtcdCluster is the etcd cluster whose etcd-manager keeps the API
// server's etcd client certificate.
const apiServerEtcdCluster = "main"

type controlPlaneBuilder struct{}

func (controlPlaneBuilder) Name() string { return "control-plane" }

func (controlPlaneBuilder) Build(in *Input, c *Collector) error {
	s := in.Config.Spec
	if s.Role != config.RoleControlPlane {
		return nil
	}
	if s.ControlPlane == nil {
		return fmt.Errorf("spec.controlPlane: missing (defaults were not applied)")
	}
	bins := []struct{ asset, path string }{
		{"kube-apiserver", units.KubeAPIServerBin},
		{"kube-controller-manager", units.KubeControllerManagerBin},
		{"kube-scheduler", units.KubeSchedulerBin},
		{"kubectl", units.KubectlBin},
	}
	for _, b := range bins {
		a, err := c.Asset(b.asset)
		if err != nil {
			return err
		}
		if err := c.Add(&tasks.Install{Path: b.path, Asset: a, Mode: 0o755}); err != nil {
			return err
		}
	}
	certs, err := controlPlaneCerts(in)
	if err != nil {
		return err
	}
	for _, t := range certs {
		if err := c.Add(t); err != nil {
			return err
		}
	}
	for _, t := range []*tasks.CAFiles{
		{CA: pki.CAKubernetes, CertPath: CACert, KeyPath: CAKey, Keystore: in.Keystore},
		{CA: pki.CAFrontProxy, CertPath: FrontProxyCACert, Keystore: in.Keystore},
	} {
		if err := c.Add(t); err != nil {
			return err
		}
	}
	if err := c.Add(&tasks.SigningKeyFiles{Name: pki.SigningKeyServiceAccount, KeyPath: ServiceAccountKey, PubPath: ServiceAccountPub, Keystore: in.Keystore}); err != nil {
		return err
	}
	for _, k := range []struct {
		path, user string
		groups     []string
	}{
		{AdminKubeconfig, AdminUser, []string{"system:masters"}},
		{ControllerManagerKubeconfig, "system:kube-controller-manager", nil},
		{SchedulerKubeconfig, "system:kube-scheduler", nil},
	} {
		if err := c.Add(&tasks.Kubeconfig{Path: k.path, Server: LocalAPIServer, User: k.user, Groups: k.groups, CA: pki.CAKubernetes, Keystore: in.Keystore, Now: in.Now}); err != nil {
			return err
		}
	}
	apiArgs, err := APIServerArgs(in)
	if err != nil {
		return err
	}
	// Inputs are what each binary reads at start; a change restarts it.
	// The etcd client files are etcd-manager's (not nodeup's) and are
	// reread by the API server when etcd-manager rotates them.
	svcs := []struct {
		u      units.Unit
		inputs []string
	}{
		{units.KubeAPIServer(apiArgs), []string{units.KubeAPIServerBin, CACert, FrontProxyCACert, APIServerCert, APIServerKubeletClientCert, FrontProxyClientCert, ServiceAccountKey}},
		{units.KubeControllerManager(ControllerManagerArgs(in)), []string{units.KubeControllerManagerBin, CACert, ServiceAccountKey, ControllerManagerKubeconfig}},
		{units.KubeScheduler(SchedulerArgs(in)), []string{units.KubeSchedulerBin, SchedulerKubeconfig}},
	}
	for _, sv := range svcs {
		if err := c.Add(service(sv.u, sv.inputs)); err != nil {
			return err
		}
	}
	return nil
}

// nodeAddress is Input.NodeAddress, or 127.0.0.1 when it is unset: graphs
// built only to be described (tests, plans of other nodes). nodeup apply
// always sets it on a control-plane node, and fails when it cannot find it.
func (in *Input) nodeAddress() netip.Addr {
	if in.NodeAddress.IsValid() {
		return in.NodeAddress
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1})
}

// controlPlaneCerts are the certificates nodeup issues to the API server.
func controlPlaneCerts(in *Input) ([]*tasks.Certificate, error) {
	s := in.Config.Spec
	svcIP, err := s.Networking.APIServiceIP()
	if err != nil {
		return nil, fmt.Errorf("spec.%w", err)
	}
	return []*tasks.Certificate{
		{CertPath: APIServerCert, KeyPath: APIServerKey, CA: pki.CAKubernetes, Keystore: in.Keystore, Now: in.Now,
			Request: pki.CertRequest{CommonName: "kube-apiserver", Usage: pki.UsageServer,
				DNSNames: APIServerDNSNames(s), IPs: []net.IP{net.IP(svcIP.AsSlice()), net.IP(in.nodeAddress().AsSlice()), net.ParseIP("127.0.0.1")}}},
		// The API server calls kubelets (logs, exec) as a cluster admin.
		{CertPath: APIServerKubeletClientCert, KeyPath: APIServerKubeletClientKey, CA: pki.CAKubernetes, Keystore: in.Keystore, Now: in.Now,
			Request: pki.CertRequest{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}, Usage: pki.UsageClient}},
		{CertPath: FrontProxyClientCert, KeyPath: FrontProxyClientKey, CA: pki.CAFrontProxy, Keystore: in.Keystore, Now: in.Now,
			Request: pki.CertRequest{CommonName: FrontProxyClientCN, Usage: pki.UsageClient}},
	}, nil
}

// APIServerDNSNames are the names the API serving certificate carries: the
// in-cluster API name and the kubernetes Service's names.
func APIServerDNSNames(s config.NodeConfigSpec) []string {
	names := []string{s.ControlPlane.APIServerName, "kubernetes", "kubernetes.default", "kubernetes.default.svc"}
	if d := s.Kubelet.ClusterDomain; d != "" {
		names = append(names, "kubernetes.default.svc."+d)
	}
	return names
}

// componentFlag is one --name=value of a component.
type componentFlag struct{ name, value string }

// renderFlags renders flags in order, with extra overriding a flag of the
// same name in place and adding the others in name order.
func renderFlags(flags []componentFlag, extra map[string]string) []string {
	out := make([]string, 0, len(flags)+len(extra))
	used := map[string]bool{}
	for _, f := range flags {
		v := f.value
		if e, ok := extra[f.name]; ok {
			v = e
			used[f.name] = true
		}
		out = append(out, "--"+f.name+"="+v)
	}
	for _, k := range sortedKeys(extra) {
		if !used[k] {
			out = append(out, "--"+k+"="+extra[k])
		}
	}
	return out
}

// APIServerArgs are kube-apiserver's flags.
func APIServerArgs(in *Input) ([]string, error) {
	s := in.Config.Spec
	cp := s.ControlPlane
	mainEtcd, ok := etcdCluster(s, apiServerEtcdCluster)
	if !ok {
		return nil, fmt.Errorf("spec.etcdClusters: no etcd cluster named %q for the API server", apiServerEtcdCluster)
	}
	flags := []componentFlag{
		{"advertise-address", in.nodeAddress().String()},
		{"secure-port", strconv.Itoa(APIServerPort)},
		{"allow-privileged", "true"},
		{"authorization-mode", "Node,RBAC"},
		{"enable-admission-plugins", "NodeRestriction"},
		{"enable-bootstrap-token-auth", "true"},
		{"client-ca-file", CACert},
		{"tls-cert-file", APIServerCert},
		{"tls-private-key-file", APIServerKey},
		{"etcd-servers", localEtcd(mainEtcd)},
	}
	if events, ok := etcdCluster(s, "events"); ok {
		flags = append(flags, componentFlag{"etcd-servers-overrides", "/events#" + localEtcd(events)})
	}
	flags = append(flags,
		componentFlag{"etcd-cafile", etcdClientCA},
		componentFlag{"etcd-certfile", etcdClientCert},
		componentFlag{"etcd-keyfile", etcdClientKey},
		componentFlag{"service-cluster-ip-range", s.Networking.ServiceCIDR},
		componentFlag{"service-account-issuer", cp.ServiceAccountIssuer},
		componentFlag{"service-account-key-file", ServiceAccountPub},
		componentFlag{"service-account-signing-key-file", ServiceAccountKey},
		componentFlag{"kubelet-client-certificate", APIServerKubeletClientCert},
		componentFlag{"kubelet-client-key", APIServerKubeletClientKey},
		componentFlag{"kubelet-preferred-address-types", "InternalIP,Hostname"},
		componentFlag{"requestheader-client-ca-file", FrontProxyCACert},
		componentFlag{"requestheader-allowed-names", FrontProxyClientCN},
		componentFlag{"requestheader-username-headers", "X-Remote-User"},
		componentFlag{"requestheader-group-headers", "X-Remote-Group"},
		componentFlag{"requestheader-extra-headers-prefix", "X-Remote-Extra-"},
		componentFlag{"proxy-client-cert-file", FrontProxyClientCert},
		componentFlag{"proxy-client-key-file", FrontProxyClientKey},
	)
	return renderFlags(flags, cp.APIServer.ExtraArgs), nil
}

// ControllerManagerArgs are kube-controller-manager's flags. Besides the
// default controllers it runs the bootstrap-token signer and cleaner, and
// signs kubelet CSRs with the kubernetes CA; it cuts each node's pod range
// from networking.podCIDR.
func ControllerManagerArgs(in *Input) []string {
	s := in.Config.Spec
	cp := s.ControlPlane
	flags := []componentFlag{
		{"kubeconfig", ControllerManagerKubeconfig},
		{"authentication-kubeconfig", ControllerManagerKubeconfig},
		{"authorization-kubeconfig", ControllerManagerKubeconfig},
		{"bind-address", "127.0.0.1"},
		{"leader-elect", "true"},
		{"cluster-name", s.ClusterName},
		{"client-ca-file", CACert},
		{"requestheader-client-ca-file", FrontProxyCACert},
		{"root-ca-file", CACert},
		{"service-account-private-key-file", ServiceAccountKey},
		{"use-service-account-credentials", "true"},
		{"cluster-signing-cert-file", CACert},
		{"cluster-signing-key-file", CAKey},
		{"controllers", "*,bootstrapsigner,tokencleaner"},
		{"service-cluster-ip-range", s.Networking.ServiceCIDR},
	}
	if s.Networking.PodCIDR != "" {
		flags = append(flags,
			componentFlag{"allocate-node-cidrs", "true"},
			componentFlag{"cluster-cidr", s.Networking.PodCIDR},
			componentFlag{"node-cidr-mask-size", strconv.Itoa(cp.NodeCIDRMaskSize)},
		)
	}
	return renderFlags(flags, cp.ControllerManager.ExtraArgs)
}

// SchedulerArgs are kube-scheduler's flags.
func SchedulerArgs(in *Input) []string {
	cp := in.Config.Spec.ControlPlane
	return renderFlags([]componentFlag{
		{"kubeconfig", SchedulerKubeconfig},
		{"authentication-kubeconfig", SchedulerKubeconfig},
		{"authorization-kubeconfig", SchedulerKubeconfig},
		{"bind-address", "127.0.0.1"},
		{"leader-elect", "true"},
	}, cp.Scheduler.ExtraArgs)
}

func etcdCluster(s config.NodeConfigSpec, name string) (config.EtcdClusterSpec, bool) {
	i := slices.IndexFunc(s.EtcdClusters, func(e config.EtcdClusterSpec) bool { return e.Name == name })
	if i < 0 {
		return config.EtcdClusterSpec{}, false
	}
	return s.EtcdClusters[i], true
}

// localEtcd is the URL of an etcd cluster's member on this node: etcd
// listens on 127.0.0.1 too, and its serving certificate names 127.0.0.1.
func localEtcd(e config.EtcdClusterSpec) string {
	return "https://127.0.0.1:" + strconv.Itoa(e.ClientPort)
}

// EtcdBinDirRoot holds one v<version>/{etcd,etcdutl} per installed etcd
// version; it is etcd-manager's --etcd-bin-dir-root.
const EtcdBinDirRoot = paths.EtcdBinDirRoot

// EtcdBin is where the etcd binary of a version is installed.
func EtcdBin(version string) string { return EtcdBinDirRoot + "/v" + version + "/etcd" }

// EtcdutlBin is where the etcdutl binary of a version is installed, beside
// etcd: etcd-manager restores snapshots with it (etcdprocess.UtilPath).
func EtcdutlBin(version string) string { return EtcdBinDirRoot + "/v" + version + "/etcdutl" }

// etcdVersions are the etcd versions the configuration names, in order.
func etcdVersions(s config.NodeConfigSpec) []string {
	var out []string
	for _, e := range s.EtcdClusters {
		if !slices.Contains(out, e.Version) {
			out = append(out, e.Version)
		}
	}
	return out
}

// etcdBinariesBuilder installs every etcd version the configuration names,
// from the pinned etcd-<version> and etcdutl-<version> assets, where
// etcd-manager runs them. Like etcd's binary, etcdutl restarts nothing: the
// manager runs it afresh for each restore.
type etcdBinariesBuilder struct{}

func (etcdBinariesBuilder) Name() string { return "etcd" }

func (etcdBinariesBuilder) Build(in *Input, c *Collector) error {
	s := in.Config.Spec
	if s.Role != config.RoleControlPlane {
		return nil
	}
	for _, v := range etcdVersions(s) {
		a, err := c.Asset(config.EtcdAssetName(v))
		if err != nil {
			return err
		}
		if err := c.Add(&tasks.Install{Path: EtcdBin(v), Asset: a, Mode: 0o755}); err != nil {
			return err
		}
		u, err := c.Asset(config.EtcdutlAssetName(v))
		if err != nil {
			return err
		}
		if err := c.Add(&tasks.Install{Path: EtcdutlBin(v), Asset: u, Mode: 0o755}); err != nil {
			return err
		}
	}
	return nil
}

// etcdManagerArgs are the arguments of one etcd cluster's etcd-manager
// unit: `run` and the flags of EtcdManagerConfig.
func etcdManagerArgs(in *Input, e config.EtcdClusterSpec) ([]string, error) {
	c, err := EtcdManagerConfig(in, e)
	if err != nil {
		return nil, err
	}
	return append([]string{"run"}, c.Args()...), nil
}

// EtcdManagerConfig is the run configuration of one etcd cluster's
// etcd-manager. The address defaults to the default route's source
// address; the data directory is where protokube mounts the member's
// volume, whose slot is the member's identity. The seed carries the
// configuration's member count and version: etcd-manager writes them as
// the control spec only when the store has none, so etcd-manager-ctl owns
// the spec afterwards. On gossip clusters the peers are found through
// gossip first, with the aws volume provider through the EBS volumes
// (aws-volumes) next, and the store registry last, so a stale registry does
// not keep the cluster from forming.
func EtcdManagerConfig(in *Input, e config.EtcdClusterSpec) (runconfig.Config, error) {
	s := in.Config.Spec
	c := runconfig.DefaultConfig()
	c.Store = in.StoreSettings() // the complete store settings, as nodeup used them
	c.ClusterName, c.EtcdCluster = s.ClusterName, e.Name
	c.DataDir, c.BinDirRoot, c.HostsFile = units.EtcdDataDir(e.Name), EtcdBinDirRoot, paths.HostsFile
	c.PeerPort, c.ClientPort, c.ManagerPort = e.PeerPort, e.ClientPort, e.ManagerPort
	c.SeedMembers, c.SeedEtcdVersion = e.Members, e.Version
	if e.Name == apiServerEtcdCluster {
		c.APIServerClientCertDir = APIServerEtcdClientDir
	}
	// Full backups: the configuration's interval and, when set, the store
	// they go to (opened with the same store settings).
	if e.Backups.Interval != "" {
		d, err := time.ParseDuration(e.Backups.Interval)
		if err != nil {
			return c, fmt.Errorf("spec.etcdClusters[%s].backups.interval: %w", e.Name, err)
		}
		c.BackupInterval = d
	}
	if e.Backups.VerifyInterval != "" {
		d, err := time.ParseDuration(e.Backups.VerifyInterval)
		if err != nil {
			return c, fmt.Errorf("spec.etcdClusters[%s].backups.verifyInterval: %w", e.Name, err)
		}
		c.VerifyInterval = d
	}
	if e.Backups.DeltaInterval != "" {
		d, err := time.ParseDuration(e.Backups.DeltaInterval)
		if err != nil {
			return c, fmt.Errorf("spec.etcdClusters[%s].backups.deltaInterval: %w", e.Name, err)
		}
		c.DeltaInterval = d
	}
	c.BackupStore = e.Backups.Store
	// Retention: unset days are etcd-manager's defaults (the same
	// constants as pkg/config's).
	if d := e.Backups.Retention.HourlyDays; d != nil {
		c.RetentionHourlyDays = *d
	}
	if d := e.Backups.Retention.DailyDays; d != nil {
		c.RetentionDailyDays = *d
	}
	// With EBS volumes the peers are also found through EC2: the volumes
	// of the etcd cluster attached to running instances (after gossip, when
	// on), reached with the provider's own EC2 and metadata settings.
	var disc []string
	if s.Gossip != nil {
		disc = append(disc, runconfig.DiscoveryGossip)
		c.GossipAddr = GossipConfig(in).StatusAddr
	}
	if v := s.Volume; v != nil && v.Provider == config.VolumeProviderAWS {
		disc = append(disc, runconfig.DiscoveryAWSVolumes)
		if v.AWS != nil {
			c.AWS = *v.AWS
		}
	}
	if disc != nil {
		c.Discovery = append(disc, runconfig.DiscoveryStore)
	}
	return c, nil
}

// etcdManagerInputs restart etcd-manager when its binary or the etcd binary
// it runs changes.
func etcdManagerInputs(e config.EtcdClusterSpec) []string {
	return []string{units.EtcdManagerBin, EtcdBin(e.Version)}
}
