package config

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func loadExampleNode(t *testing.T, name string) *NodeConfig {
	t.Helper()
	n, err := LoadNodeConfigFile(filepath.Join(examplesDir, "nodeup", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func loadExampleCluster(t *testing.T) *Cluster {
	t.Helper()
	c, err := LoadClusterFile(filepath.Join(examplesDir, "cluster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// expectOnly checks that err is an *Errors holding exactly one problem, at
// path, whose message contains msg.
func expectOnly(t *testing.T, err error, path, msg string) {
	t.Helper()
	var es *Errors
	if !errors.As(err, &es) {
		t.Fatalf("error %v (%T), want *config.Errors", err, err)
	}
	if len(*es) != 1 || (*es)[0].Path != path || !strings.Contains((*es)[0].Msg, msg) {
		t.Fatalf("got:\n%v\nwant exactly one error at %s containing %q", err, path, msg)
	}
	if got := (*es)[0].Error(); !strings.HasPrefix(got, path+": ") {
		t.Errorf("error without source %q does not start with its path", got)
	}
}

func TestValidateNodeConfig(t *testing.T) {
	cases := []struct {
		name  string
		group string // example to start from
		edit  func(*NodeConfig)
		path  string
		msg   string
	}{
		{"instance group name", "nodes", func(n *NodeConfig) { n.Metadata.Name = "Nodes" }, "metadata.name", `"Nodes" is not a valid instance group name`},
		{"missing cluster name", "nodes", func(n *NodeConfig) { n.Spec.ClusterName = "" }, "spec.clusterName", "required"},
		{"role", "nodes", func(n *NodeConfig) { n.Spec.Role = "worker" }, "spec.role", `"worker" is not a role`},
		{"missing role", "nodes", func(n *NodeConfig) { n.Spec.Role = "" }, "spec.role", "required"},
		{"kubernetes too old", "nodes", func(n *NodeConfig) { n.Spec.KubernetesVersion = "1.27.9" }, "spec.kubernetesVersion", "(supported: 1.28 to 1.37)"},
		{"kubernetes too new", "nodes", func(n *NodeConfig) { n.Spec.KubernetesVersion = "1.38.0" }, "spec.kubernetesVersion", "not a supported Kubernetes version"},
		{"kubernetes 2.x", "nodes", func(n *NodeConfig) { n.Spec.KubernetesVersion = "2.30.0" }, "spec.kubernetesVersion", "not a supported Kubernetes version"},
		{"kubernetes not semver", "nodes", func(n *NodeConfig) { n.Spec.KubernetesVersion = "1.32" }, "spec.kubernetesVersion", "want MAJOR.MINOR.PATCH"},
		{"sha256 short", "nodes", func(n *NodeConfig) { n.Spec.Assets[1].SHA256 = "abcd" }, "spec.assets[1].sha256", "64 lowercase hex"},
		{"sha256 uppercase", "nodes", func(n *NodeConfig) { n.Spec.Assets[0].SHA256 = strings.ToUpper(n.Spec.Assets[0].SHA256) }, "spec.assets[0].sha256", "must be lowercase hex"},
		{"sha256 missing", "nodes", func(n *NodeConfig) { n.Spec.Assets[0].SHA256 = "" }, "spec.assets[0].sha256", "required"},
		{"asset without URL", "nodes", func(n *NodeConfig) { n.Spec.Assets[2].URLs = nil }, "spec.assets[2].urls", "at least one URL"},
		{"asset URL scheme", "nodes", func(n *NodeConfig) { n.Spec.Assets[0].URLs[1] = "ftp://x/y" }, "spec.assets[0].urls[1]", "scheme http, https, file, s3, gs"},
		{"asset URL without host", "nodes", func(n *NodeConfig) { n.Spec.Assets[0].URLs[1] = "https:///y" }, "spec.assets[0].urls[1]", "names no host"},
		{"asset relative file URL", "nodes", func(n *NodeConfig) { n.Spec.Assets[0].URLs[1] = "file:kubelet" }, "spec.assets[0].urls[1]", "absolute path"},
		{"asset duplicate URL", "nodes", func(n *NodeConfig) { n.Spec.Assets[0].URLs[1] = n.Spec.Assets[0].URLs[0] }, "spec.assets[0].urls[1]", "duplicate of spec.assets[0].urls[0]"},
		{"asset duplicate name", "nodes", func(n *NodeConfig) { n.Spec.Assets[3].Name = "runc" }, "spec.assets[3].name", `"runc" is already the name of spec.assets[2]`},
		{"asset name", "nodes", func(n *NodeConfig) { n.Spec.Assets[3].Name = "CNI Plugins" }, "spec.assets[3].name", "not a valid asset name"},
		{"container runtime", "nodes", func(n *NodeConfig) { n.Spec.ContainerRuntime.Name = "rkt" }, "spec.containerRuntime.name", `"rkt" is not a supported container runtime`},
		{"registry mirror URL", "control-plane", func(n *NodeConfig) { n.Spec.ContainerRuntime.RegistryMirrors["docker.io"][0] = "registry-mirror" }, `spec.containerRuntime.registryMirrors["docker.io"][0]`, "not an http or https URL"},
		{"cni without provider", "nodes", func(n *NodeConfig) { n.Spec.Networking.Provider = "" }, "spec.networking.provider", `required when mode is "cni"`},
		{"provider without cni", "nodes", func(n *NodeConfig) { n.Spec.Networking.Mode = "kubenet" }, "spec.networking.provider", `only used when mode is "cni"`},
		{"networking mode", "nodes", func(n *NodeConfig) { n.Spec.Networking.Mode = "weave"; n.Spec.Networking.Provider = "" }, "spec.networking.mode", `"weave" is not a networking mode`},
		{"pod CIDR syntax", "nodes", func(n *NodeConfig) { n.Spec.Networking.PodCIDR = "100.96.0.0" }, "spec.networking.podCIDR", "is not a CIDR"},
		{"CIDRs overlap", "nodes", func(n *NodeConfig) { n.Spec.Networking.ServiceCIDR = "100.100.0.0/16" }, "spec.networking.serviceCIDR", "100.100.0.0/16 overlaps podCIDR 100.96.0.0/11"},
		{"pod CIDR outside non-masquerade", "nodes", func(n *NodeConfig) { n.Spec.Networking.PodCIDR = "10.0.0.0/16" }, "spec.networking.podCIDR", "not inside nonMasqueradeCIDR 100.64.0.0/10"},
		{"MTU", "nodes", func(n *NodeConfig) { n.Spec.Networking.MTU = 100 }, "spec.networking.mtu", "out of range"},
		{"apiServer scheme", "nodes", func(n *NodeConfig) { n.Spec.Kubelet.APIServer = "http://a" }, "spec.kubelet.apiServer", "not an https URL"},
		{"clusterDNS", "nodes", func(n *NodeConfig) { n.Spec.Kubelet.ClusterDNS = "kube-dns" }, "spec.kubelet.clusterDNS", "not an IP address"},
		{"clusterDomain", "nodes", func(n *NodeConfig) { n.Spec.Kubelet.ClusterDomain = "cluster..local" }, "spec.kubelet.clusterDomain", "not a valid DNS name"},
		{"maxPods", "nodes", func(n *NodeConfig) { n.Spec.Kubelet.MaxPods = -1 }, "spec.kubelet.maxPods", "out of range"},
		{"eviction signal", "nodes", func(n *NodeConfig) { n.Spec.Kubelet.EvictionHard = map[string]string{"disk.free": "1Gi"} }, `spec.kubelet.evictionHard["disk.free"]`, "not a kubelet eviction signal"},
		{"eviction threshold", "nodes", func(n *NodeConfig) { n.Spec.Kubelet.EvictionHard = map[string]string{"nodefs.available": "lots"} }, `spec.kubelet.evictionHard["nodefs.available"]`, "not a threshold"},
		{"eviction percentage", "nodes", func(n *NodeConfig) { n.Spec.Kubelet.EvictionHard = map[string]string{"nodefs.available": "100%"} }, `spec.kubelet.evictionHard["nodefs.available"]`, "not a threshold"},
		{"label key", "nodes", func(n *NodeConfig) { n.Spec.Kubelet.NodeLabels["bad key"] = "x" }, `spec.kubelet.nodeLabels["bad key"]`, "not a valid label key"},
		{"label value", "nodes", func(n *NodeConfig) { n.Spec.Kubelet.NodeLabels["tier"] = "a b" }, `spec.kubelet.nodeLabels["tier"]`, "not a valid label value"},
		{"taint effect", "control-plane", func(n *NodeConfig) { n.Spec.Kubelet.Taints[0] = "dedicated=etcd:Never" }, "spec.kubelet.taints[0]", `effect "Never" must be one of`},
		{"extra arg name", "nodes", func(n *NodeConfig) { n.Spec.Kubelet.ExtraArgs = map[string]string{"--v": "2"} }, `spec.kubelet.extraArgs["--v"]`, "without the leading --"},
		{"sysctl name", "nodes", func(n *NodeConfig) { n.Spec.Sysctls["ip_forward"] = "1" }, `spec.sysctls["ip_forward"]`, "not a sysctl name"},
		{"sysctl value", "nodes", func(n *NodeConfig) { n.Spec.Sysctls["net.ipv4.ip_forward"] = "" }, `spec.sysctls["net.ipv4.ip_forward"]`, "not a sysctl value"},
		{"kernel module", "nodes", func(n *NodeConfig) { n.Spec.KernelModules[0] = "br netfilter" }, "spec.kernelModules[0]", "not a valid kernel module name"},
		{"duplicate package", "nodes", func(n *NodeConfig) { n.Spec.Packages = []string{"curl", "socat", "curl"} }, "spec.packages[2]", `"curl" is already listed at spec.packages[0]`},
		{"package name", "nodes", func(n *NodeConfig) { n.Spec.Packages = []string{"curl; rm -rf /"} }, "spec.packages[0]", "not a valid package name"},
		{"control plane without etcd", "control-plane", func(n *NodeConfig) { n.Spec.EtcdClusters = nil }, "spec.etcdClusters", "required on a control-plane node"},
		{"etcd on a worker", "nodes", func(n *NodeConfig) {
			n.Spec.EtcdClusters = loadExampleNode(t, "control-plane").Spec.EtcdClusters
		}, "spec.etcdClusters", "only control-plane nodes run etcd"},
		{"etcd version", "control-plane", func(n *NodeConfig) { n.Spec.EtcdClusters[1].Version = "3.9.99" }, "spec.etcdClusters[1].version", `"3.9.99" is not a supported etcd version (supported: 3.5, 3.6, 3.7)`},
		{"etcd 3.4", "control-plane", func(n *NodeConfig) { n.Spec.EtcdClusters[0].Version = "3.4.34" }, "spec.etcdClusters[0].version", "not a supported etcd version"},
		{"etcd members", "control-plane", func(n *NodeConfig) { n.Spec.EtcdClusters[0].Members = 2 }, "spec.etcdClusters[0].members", "must be 1, 3 or 5"},
		{"etcd name", "control-plane", func(n *NodeConfig) { n.Spec.EtcdClusters[1].Name = "Events" }, "spec.etcdClusters[1].name", "not a valid etcd cluster name"},
		{"etcd duplicate name", "control-plane", func(n *NodeConfig) {
			n.Spec.EtcdClusters[1].Name = "main"
			n.Spec.EtcdClusters[1].PeerPort, n.Spec.EtcdClusters[1].ClientPort, n.Spec.EtcdClusters[1].ManagerPort = 12380, 14001, 13994
		}, "spec.etcdClusters[1].name", `"main" is already the name of spec.etcdClusters[0]`},
		{"etcd port clash", "control-plane", func(n *NodeConfig) { n.Spec.EtcdClusters[1].ClientPort = 2380 }, "spec.etcdClusters[1].clientPort", "port 2380 is already used by spec.etcdClusters[0].peerPort"},
		{"etcd port range", "control-plane", func(n *NodeConfig) { n.Spec.EtcdClusters[1].ManagerPort = 65536 }, "spec.etcdClusters[1].managerPort", "not a port number"},
		{"gossip port clash", "control-plane", func(n *NodeConfig) { n.Spec.Gossip.Port = 3995 }, "spec.gossip.port", "already used by spec.etcdClusters[1].managerPort"},
		{"backup interval syntax", "control-plane", func(n *NodeConfig) { n.Spec.EtcdClusters[0].Backups.Interval = "15" }, "spec.etcdClusters[0].backups.interval", `"15" is not a duration`},
		{"backup interval too short", "control-plane", func(n *NodeConfig) { n.Spec.EtcdClusters[0].Backups.Interval = "59s" }, "spec.etcdClusters[0].backups.interval", "shorter than the minimum of 1m"},
		{"verify interval syntax", "control-plane", func(n *NodeConfig) { n.Spec.EtcdClusters[0].Backups.VerifyInterval = "daily" }, "spec.etcdClusters[0].backups.verifyInterval", `"daily" is not a duration`},
		{"verify interval too short", "control-plane", func(n *NodeConfig) { n.Spec.EtcdClusters[0].Backups.VerifyInterval = "30m" }, "spec.etcdClusters[0].backups.verifyInterval", "shorter than the minimum of 1h"},
		{"delta interval syntax", "control-plane", func(n *NodeConfig) { n.Spec.EtcdClusters[0].Backups.DeltaInterval = "5" }, "spec.etcdClusters[0].backups.deltaInterval", `"5" is not a Go duration`},
		{"delta interval too short", "control-plane", func(n *NodeConfig) { n.Spec.EtcdClusters[0].Backups.DeltaInterval = "100ms" }, "spec.etcdClusters[0].backups.deltaInterval", "100ms is out of range (0s for no deltas, or 1s to 1h0m0s)"},
		{"delta interval too long", "control-plane", func(n *NodeConfig) { n.Spec.EtcdClusters[1].Backups.DeltaInterval = "2h" }, "spec.etcdClusters[1].backups.deltaInterval", "2h0m0s is out of range"},
		{"backup store", "control-plane", func(n *NodeConfig) { n.Spec.EtcdClusters[0].Backups.Store = "https://bucket" }, "spec.etcdClusters[0].backups.store", "not a state store URL"},
		{"backup retention hourly", "control-plane", func(n *NodeConfig) { n.Spec.EtcdClusters[0].Backups.Retention.HourlyDays = new(-1) }, "spec.etcdClusters[0].backups.retention.hourlyDays", "-1 is out of range (0 to 3650)"},
		{"backup retention daily", "control-plane", func(n *NodeConfig) { n.Spec.EtcdClusters[1].Backups.Retention.DailyDays = new(3651) }, "spec.etcdClusters[1].backups.retention.dailyDays", "3651 is out of range (0 to 3650)"},
		{"backup store bucket", "control-plane", func(n *NodeConfig) { n.Spec.EtcdClusters[0].Backups.Store = "s3:///prefix" }, "spec.etcdClusters[0].backups.store", "names no bucket"},
		{"volume size", "control-plane", func(n *NodeConfig) { n.Spec.EtcdClusters[0].Volume.SizeGiB = -5 }, "spec.etcdClusters[0].volume.sizeGiB", "out of range"},
		{"volume device outside /dev", "control-plane", func(n *NodeConfig) { n.Spec.EtcdClusters[1].Volume.Device = "/tmp/disk" }, "spec.etcdClusters[1].volume.device", "not a clean device path under /dev/"},
		{"volume device not clean", "control-plane", func(n *NodeConfig) { n.Spec.EtcdClusters[0].Volume.Device = "/dev/../etc/passwd" }, "spec.etcdClusters[0].volume.device", "not a clean device path"},
		{"volume device with a comma", "control-plane", func(n *NodeConfig) { n.Spec.EtcdClusters[0].Volume.Device = "/dev/sdb,main=/dev/sdc" }, "spec.etcdClusters[0].volume.device", "not a clean device path"},
		{"gossip seeds", "nodes", func(n *NodeConfig) { n.Spec.Gossip.Seeds = "dns" }, "spec.gossip.seeds", `"dns" is not a seed provider`},
		{"static seeds needed", "nodes", func(n *NodeConfig) { n.Spec.Gossip.Seeds = "static" }, "spec.gossip.staticSeeds", "required when seeds is \"static\""},
		{"static seeds unused", "nodes", func(n *NodeConfig) { n.Spec.Gossip.StaticSeeds = []string{"10.0.0.1:3996"} }, "spec.gossip.staticSeeds", "only used when seeds is \"static\""},
		{"static seed port", "nodes", func(n *NodeConfig) {
			n.Spec.Gossip.Seeds = "static"
			n.Spec.Gossip.StaticSeeds = []string{"10.0.0.1:3996", "node-b:0"}
		}, "spec.gossip.staticSeeds[1]", `"0" is not a port number`},
		{"dns listen host", "nodes", func(n *NodeConfig) { n.Spec.Gossip.DNSListen = "localhost:53" }, "spec.gossip.dnsListen", `"localhost" is not an IP address`},
		{"apiVersion", "nodes", func(n *NodeConfig) { n.APIVersion = "v1" }, "apiVersion", "is not supported"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := loadExampleNode(t, tc.group)
			tc.edit(n)
			expectOnly(t, n.Validate(), tc.path, tc.msg)
			expectOnly(t, Validate(n), tc.path, tc.msg)
		})
	}
}

func TestValidateCluster(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Cluster)
		path string
		msg  string
	}{
		{"cluster name", func(c *Cluster) { c.Metadata.Name = "-bad.k8s.local" }, "metadata.name", "not a valid DNS name"},
		{"cluster name too long", func(c *Cluster) { c.Metadata.Name = strings.Repeat("a", 64) + ".k8s.local" }, "metadata.name", "not a valid DNS name"},
		{"no etcd", func(c *Cluster) { c.Spec.EtcdClusters = nil }, "spec.etcdClusters", `at least the "main" etcd cluster`},
		{"no main etcd", func(c *Cluster) { c.Spec.EtcdClusters = c.Spec.EtcdClusters[1:] }, "spec.etcdClusters", `an etcd cluster named "main" is required`},
		{"etcd version", func(c *Cluster) { c.Spec.EtcdClusters[1].Version = "3.9.99" }, "spec.etcdClusters[1].version", `"3.9.99" is not a supported etcd version (supported: 3.5, 3.6, 3.7)`},
		{"other etcd without ports", func(c *Cluster) {
			c.Spec.EtcdClusters = append(c.Spec.EtcdClusters, EtcdClusterSpec{Name: "cilium", Members: 1, Version: "3.5.21", PeerPort: 2382, ClientPort: 4003,
				Volume: VolumeSpec{SizeGiB: 1}, Backups: BackupSpec{Interval: "1h"}})
		}, "spec.etcdClusters[2].managerPort", `etcd cluster "cilium" has no default ports`},
		{"gossip needed for k8s.local", func(c *Cluster) { c.Spec.Gossip = nil }, "spec.gossip", "*.k8s.local"},
		{"kubernetes version", func(c *Cluster) { c.Spec.KubernetesVersion = "" }, "spec.kubernetesVersion", "required"},
		{"kind", func(c *Cluster) { c.Kind = "NodeConfig" }, "kind", `expected "Cluster", got "NodeConfig"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := loadExampleCluster(t)
			tc.edit(c)
			expectOnly(t, c.Validate(), tc.path, tc.msg)
		})
	}
	// A cluster with its own DNS zone does not need gossip.
	c := loadExampleCluster(t)
	c.Metadata.Name, c.Spec.Gossip = "prod.example.com", nil
	if err := c.Validate(); err != nil {
		t.Errorf("cluster without gossip: %v", err)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	n := loadExampleNode(t, "control-plane")
	n.Spec.Role = "boss"
	n.Spec.Assets[0].SHA256 = "x"
	n.Spec.EtcdClusters[1].Version = "3.9.99"
	n.Spec.Networking.Mode = "none"
	n.Spec.Networking.Provider = ""
	err := n.Validate()
	var es *Errors
	if !errors.As(err, &es) || len(*es) != 4 {
		t.Fatalf("got %v, want 4 problems", err)
	}
	want := []string{"spec.role", "spec.assets[0].sha256", "spec.networking.mode", "spec.etcdClusters[1].version"}
	for i, p := range want {
		if (*es)[i].Path != p {
			t.Errorf("problem %d at %s, want %s", i, (*es)[i].Path, p)
		}
	}
	if lines := strings.Split(err.Error(), "\n"); len(lines) != 4 {
		t.Errorf("Error() printed %d lines, want one per problem:\n%s", len(lines), err)
	}
}

func TestParsePlacesValidationErrors(t *testing.T) {
	doc := minimalNode + "  kubelet:\n    maxPods: 5000\n  etcdClusters:\n    - name: main\n      members: 3\n      version: 3.6.16\n"
	_, err := ParseNodeConfig([]byte(doc), "s3://state/example.k8s.local/nodeup/nodes.yaml")
	want := "s3://state/example.k8s.local/nodeup/nodes.yaml:10:14: spec.kubelet.maxPods: 5000 is out of range (1 to 1024)\n" +
		"s3://state/example.k8s.local/nodeup/nodes.yaml:12:5: spec.etcdClusters: only control-plane nodes run etcd; remove it from a node configuration"
	if err == nil || err.Error() != want {
		t.Fatalf("got:\n%v\nwant:\n%s", err, want)
	}
	// A defaulted field that fails is placed at the key of the nearest
	// field that is in the file.
	doc = strings.Replace(minimalNode, "role: node", "role: control-plane", 1) + "  etcdClusters:\n    - name: etcd-extra\n      members: 1\n      version: 3.5.21\n      peerPort: 2390\n      clientPort: 4010\n"
	_, err = ParseNodeConfig([]byte(doc), "cp.yaml")
	want = `cp.yaml:10:7: spec.etcdClusters[0].managerPort: required: etcd cluster "etcd-extra" has no default ports (only main and events do)`
	if err == nil || err.Error() != want {
		t.Fatalf("got:\n%v\nwant:\n%s", err, want)
	}
}

func TestSupportedEtcdVersions(t *testing.T) {
	for v, want := range map[string]bool{
		"3.5.21": true, "3.6.16": true, "3.7.3": true, "3.5.0": true,
		"3.4.34": false, "3.8.0": false, "3.9.99": false, "2.2.5": false,
		"3.5": false, "v3.5.21": false, "3.5.21-rc.0": false, "": false, "03.5.1": false,
	} {
		if got := IsSupportedEtcdVersion(v); got != want {
			t.Errorf("IsSupportedEtcdVersion(%q) = %v, want %v", v, got, want)
		}
	}
	s := SupportedEtcdVersions()
	s[0] = "9.9"
	if SupportedEtcdVersions()[0] != "3.5" {
		t.Error("SupportedEtcdVersions returns shared state")
	}
}

func TestValidateRejectsOtherTypes(t *testing.T) {
	if err := Validate(struct{}{}); err == nil {
		t.Error("Validate of a struct{} succeeded")
	}
}
