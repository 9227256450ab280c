// Package cni renders the pod network configuration of a node for the
// configured networking mode, as a pure function of the networking spec:
// which CNI plugin binaries the node needs and which files go into
// /etc/cni/net.d. Writing them is nodeup's job.
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
//   - kubenet: a bridge network (cbr0) with host-local IPAM over the node's
//     pod CIDR, port mapping, and loopback (what kubenet did inside the kubelet).
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
		f, err := bridgeConfig("kubenet", "cbr0", n)
		if err != nil {
			return Plan{}, err
		}
		return Plan{Plugins: std, Files: []File{f}}, nil
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

func bridgeConfig(name, bridge string, n config.NetworkingSpec) (File, error) {
	prefix, err := netip.ParsePrefix(n.PodCIDR)
	if err != nil {
		return File{}, fmt.Errorf("networking.podCIDR: %q: %v", n.PodCIDR, err)
	}
	prefix = prefix.Masked()
	mtu := n.MTU
	if mtu == 0 {
		mtu = 1460
	}
	type m = map[string]any
	conf := m{
		"cniVersion": "1.0.0",
		"name":       name,
		"plugins": []any{
			m{
				"type":             "bridge",
				"bridge":           bridge,
				"isDefaultGateway": true,
				"ipMasq":           false,
				"hairpinMode":      true,
				"mtu":              mtu,
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
