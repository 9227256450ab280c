// Package cni renders the pod network configuration of a node for the
// configured networking mode, as pure functions: which CNI plugin binaries
// the node needs and which files go into /etc/cni/net.d. nodeup installs
// the plugins and writes the files of Render; in kubenet mode the
// configuration depends on the node's own pod range, which is known only
// once the Node is registered, so protokube writes KubenetConfig instead.
package cni

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"

	"github.com/kopsnode/agents/pkg/config"
)

// Paths on the node.
const (
	BinDir  = "/opt/cni/bin"
	ConfDir = "/etc/cni/net.d"
)

// File is a configuration file to write.
type File struct {
	Path    string
	Content []byte
}

// Plan is what a node needs for its pod network.
type Plan struct {
	// Plugins are the CNI plugin binaries to install into BinDir, sorted.
	Plugins []string
	// Files are the configuration files to write, sorted by path.
	Files []File
}

// Render returns the plan for a networking spec.
//
//   - kubenet: the plugins only. The configuration (KubenetConfig) allocates
//     from the node's own pod range, which protokube learns from the Node
//     object and writes; until then the node has no CNI configuration and
//     the kubelet reports NetworkNotReady, which is right.
//   - cni with provider "bridge": the same bridge network, named "bridge".
//   - cni with another provider (calico, cilium, flannel, ...): the standard
//     plugins only; the provider's DaemonSet writes its own configuration.
//   - external: nothing; the operator provides everything.
func Render(n config.NetworkingSpec) (Plan, error) {
	std := []string{"bridge", "host-local", "loopback", "portmap"}
	switch n.Mode {
	case config.NetworkingExternal:
		return Plan{}, nil
	case config.NetworkingKubenet:
		if _, err := netip.ParsePrefix(n.PodCIDR); err != nil {
			return Plan{}, fmt.Errorf("networking.podCIDR: %q: %v", n.PodCIDR, err)
		}
		return Plan{Plugins: std}, nil
	case config.NetworkingCNI:
		if n.Provider == "" {
			return Plan{}, fmt.Errorf("networking.provider: required when networking.mode is %q", n.Mode)
		}
		if n.Provider == "bridge" {
			f, err := bridgeConfig("bridge", "cni0", n)
			if err != nil {
				return Plan{}, err
			}
			return Plan{Plugins: std, Files: []File{f}}, nil
		}
		return Plan{Plugins: std}, nil
	}
	return Plan{}, fmt.Errorf("networking.mode: %q is not one of kubenet, cni, external", n.Mode)
}

// KubenetConfigPath is where the kubenet configuration lives: the only
// file of ConfDir in kubenet mode, so the container runtime picks it.
const KubenetConfigPath = ConfDir + "/10-kubenet.conflist"

// DefaultMTU is the bridge MTU when the networking spec sets none.
const DefaultMTU = 1460

// KubenetConfig renders the kubenet-mode configuration of one node: a
// bridge (cbr0) with host-local IPAM over nodeRange, the node's own pod
// range (never the cluster's, or pods on two nodes would get the same
// addresses), and port mapping. The runtime sets up loopback itself with
// the loopback plugin. No masquerade here: protokube masquerades traffic
// leaving the non-masquerade range in one place. mtu 0 means DefaultMTU.
func KubenetConfig(nodeRange netip.Prefix, mtu int) (File, error) {
	if !nodeRange.IsValid() || !nodeRange.Addr().Is4() || nodeRange.Bits() > 30 {
		return File{}, fmt.Errorf("node pod range %s: want an IPv4 range of at least 4 addresses", nodeRange)
	}
	return bridgeFile("kubenet", "cbr0", nodeRange, mtu)
}

func bridgeConfig(name, bridge string, n config.NetworkingSpec) (File, error) {
	prefix, err := netip.ParsePrefix(n.PodCIDR)
	if err != nil {
		return File{}, fmt.Errorf("networking.podCIDR: %q: %v", n.PodCIDR, err)
	}
	return bridgeFile(name, bridge, prefix, n.MTU)
}

func bridgeFile(name, bridge string, prefix netip.Prefix, mtu int) (File, error) {
	prefix = prefix.Masked()
	if mtu == 0 {
		mtu = DefaultMTU
	}
	type m = map[string]any
	conf := m{
		"cniVersion": "1.0.0",
		"name":       name,
		"plugins": []any{
			m{
				"type":   "bridge",
				"bridge": bridge,
				// The bridge holds the range's gateway address; the default
				// route comes from ipam's routes. isDefaultGateway would add
				// that same route a second time, and the plugin then fails
				// every pod with "file exists" (seen on the first booted
				// cluster).
				"isGateway":   true,
				"ipMasq":      false,
				"hairpinMode": true,
				"mtu":         mtu,
				"ipam": m{
					"type":   "host-local",
					"ranges": []any{[]any{m{"subnet": prefix.String()}}},
					"routes": []any{m{"dst": "0.0.0.0/0"}},
				},
			},
			m{"type": "portmap", "capabilities": m{"portMappings": true}},
		},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return File{}, err
	}
	return File{Path: ConfDir + "/10-" + name + ".conflist", Content: append(b, '\n')}, nil
}

// PluginPaths returns the installed paths of a plan's plugins.
func (p Plan) PluginPaths() []string {
	out := make([]string, len(p.Plugins))
	for i, pl := range p.Plugins {
		out[i] = BinDir + "/" + pl
	}
	sort.Strings(out)
	return out
}
