package config

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// ControlPlaneSpec configures the Kubernetes control plane that nodeup runs
// as systemd units on control-plane nodes: kube-apiserver,
// kube-controller-manager and kube-scheduler.
type ControlPlaneSpec struct {
	// APIServerName is the API server's in-cluster name, published by
	// gossip and named by the serving certificate (default
	// "api.internal.<clusterName>", the name workers' kubelets dial).
	APIServerName string `yaml:"apiServerName,omitempty" json:"apiServerName,omitempty"`
	// ServiceAccountIssuer is the issuer of service-account tokens
	// (default "https://<apiServerName>").
	ServiceAccountIssuer string `yaml:"serviceAccountIssuer,omitempty" json:"serviceAccountIssuer,omitempty"`
	// NodeCIDRMaskSize is the prefix length of each node's pod range, cut
	// from networking.podCIDR by kube-controller-manager (default 24).
	NodeCIDRMaskSize int `yaml:"nodeCIDRMaskSize,omitempty" json:"nodeCIDRMaskSize,omitempty"`
	// APIServer, ControllerManager and Scheduler add or override flags of
	// each component.
	APIServer         ComponentSpec `yaml:"apiServer,omitempty" json:"apiServer,omitempty"`
	ControllerManager ComponentSpec `yaml:"controllerManager,omitempty" json:"controllerManager,omitempty"`
	Scheduler         ComponentSpec `yaml:"scheduler,omitempty" json:"scheduler,omitempty"`
}

// ComponentSpec configures one control-plane component.
type ComponentSpec struct {
	// ExtraArgs maps a flag name (without --) to its value; it overrides a
	// flag nodeup sets.
	ExtraArgs map[string]string `yaml:"extraArgs,omitempty" json:"extraArgs,omitempty"`
}

// DefaultNodeCIDRMaskSize is the default per-node pod range: a /24, room
// for the default 110 pods.
const DefaultNodeCIDRMaskSize = 24

// DefaultAPIServerName is the in-cluster API name of a cluster:
// api.internal.<cluster>, the name gossip publishes for the control plane.
// The zone is fixed: nodeup, protokube and the API certificate all derive
// it from the cluster name (there is no dnsZone setting).
func DefaultAPIServerName(clusterName string) string {
	return "api." + DNSZonePrefix + clusterName
}

// EtcdAssetName is the name of the asset holding the etcd binary of an etcd
// version ("etcd-3.6.16").
func EtcdAssetName(version string) string { return "etcd-" + version }

// EtcdutlAssetName is the name of the asset holding the etcdutl binary of
// an etcd version ("etcdutl-3.6.16"): etcd-manager restores snapshots with
// it, so it is installed beside etcd.
func EtcdutlAssetName(version string) string { return "etcdutl-" + version }

// ControlPlaneAssets are the assets every control-plane node needs besides
// the node's own, one etcd-<version> and one etcdutl-<version> per version
// its etcd clusters name.
func (s NodeConfigSpec) ControlPlaneAssets() []string {
	names := []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"}
	seen := map[string]bool{}
	for _, e := range s.EtcdClusters {
		if e.Version != "" && !seen[e.Version] {
			seen[e.Version] = true
			names = append(names, EtcdAssetName(e.Version), EtcdutlAssetName(e.Version))
		}
	}
	return names
}

func defaultControlPlane(s *NodeConfigSpec) {
	if s.Role != RoleControlPlane {
		return
	}
	if s.ControlPlane == nil {
		s.ControlPlane = &ControlPlaneSpec{}
	}
	cp := s.ControlPlane
	if cp.APIServerName == "" && s.ClusterName != "" {
		cp.APIServerName = DefaultAPIServerName(s.ClusterName)
	}
	if cp.ServiceAccountIssuer == "" && cp.APIServerName != "" {
		cp.ServiceAccountIssuer = "https://" + cp.APIServerName
	}
	if cp.NodeCIDRMaskSize == 0 {
		cp.NodeCIDRMaskSize = DefaultNodeCIDRMaskSize
	}
}

// ValidateEtcdVersion is the one rule for etcd versions, used by the
// configuration and by etcd-manager's control spec: a full version
// MAJOR.MINOR.PATCH of a supported minor version.
func ValidateEtcdVersion(v string) error {
	switch {
	case v == "":
		return errors.New("required: an etcd version such as 3.5.21")
	case !etcdVersionRE.MatchString(v):
		return fmt.Errorf("%q is not a valid etcd version (want MAJOR.MINOR.PATCH, for example 3.5.21)", v)
	case !IsSupportedEtcdVersion(v):
		return fmt.Errorf("%q is not a supported etcd version (supported: %s)", v, strings.Join(SupportedEtcdVersions(), ", "))
	}
	return nil
}

func (v *validator) controlPlane(path string, s *NodeConfigSpec) {
	cp := s.ControlPlane
	if s.Role != RoleControlPlane {
		if cp != nil && s.Role == RoleNode {
			v.add(path, "only control-plane nodes run the control plane; remove it from a node configuration")
		}
		return
	}
	if cp == nil {
		v.add(path, "required on a control-plane node")
		return
	}
	if cp.APIServerName == "" {
		v.add(path+".apiServerName", "required: the API server's in-cluster name, for example api.internal.example.k8s.local")
	} else {
		v.dnsName(path+".apiServerName", cp.APIServerName, true)
	}
	if u, err := url.Parse(cp.ServiceAccountIssuer); err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		v.add(path+".serviceAccountIssuer", fmt.Sprintf("%q is not an https URL without query or fragment (for example https://api.internal.example.k8s.local)", cp.ServiceAccountIssuer))
	}
	if pod, ok := parseCanonicalCIDR(s.Networking.PodCIDR); ok {
		maxBits := 32
		if !pod.Addr().Is4() {
			maxBits = 128
		}
		// Equal to the pod range's length is allowed: a cluster of one node.
		if cp.NodeCIDRMaskSize < pod.Bits() || cp.NodeCIDRMaskSize > maxBits-2 {
			v.add(path+".nodeCIDRMaskSize", fmt.Sprintf("%d must be at least networking.podCIDR's /%d and at most %d", cp.NodeCIDRMaskSize, pod.Bits(), maxBits-2))
		}
	} else if cp.NodeCIDRMaskSize < 1 || cp.NodeCIDRMaskSize > 126 {
		v.add(path+".nodeCIDRMaskSize", fmt.Sprintf("%d is out of range", cp.NodeCIDRMaskSize))
	}
	v.extraArgs(path+".apiServer.extraArgs", cp.APIServer.ExtraArgs)
	v.extraArgs(path+".controllerManager.extraArgs", cp.ControllerManager.ExtraArgs)
	v.extraArgs(path+".scheduler.extraArgs", cp.Scheduler.ExtraArgs)
}

func (v *validator) extraArgs(path string, m map[string]string) {
	for _, key := range sortedKeys(m) {
		p := path + "[" + strconv.Quote(key) + "]"
		if !flagNameRE.MatchString(key) {
			v.add(p, fmt.Sprintf("%q is not a flag name (write it without the leading --)", key))
		}
		if strings.ContainsAny(m[key], "\n\r\x00") {
			v.add(p, "value contains a line break or NUL")
		}
	}
}
