package cni

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/kopsnode/agents/pkg/config"
)

func TestRenderModes(t *testing.T) {
	cases := []struct {
		name      string
		spec      config.NetworkingSpec
		files     []string
		plugins   int
		wantError string
	}{
		// kubenet: the configuration is the node's, written by protokube.
		{"kubenet", config.NetworkingSpec{Mode: "kubenet", PodCIDR: "100.96.0.0/11"}, nil, 4, ""},
		{"kubenet bad cidr", config.NetworkingSpec{Mode: "kubenet", PodCIDR: "100.96.0.0"}, nil, 0, "networking.podCIDR"},
		{"cni bridge", config.NetworkingSpec{Mode: "cni", Provider: "bridge", PodCIDR: "10.1.0.0/16", MTU: 9001}, []string{"/etc/cni/net.d/10-bridge.conflist"}, 4, ""},
		{"cni calico", config.NetworkingSpec{Mode: "cni", Provider: "calico"}, nil, 4, ""},
		{"external", config.NetworkingSpec{Mode: "external"}, nil, 0, ""},
		{"cni without provider", config.NetworkingSpec{Mode: "cni"}, nil, 0, "networking.provider"},
		{"bad cidr", config.NetworkingSpec{Mode: "cni", Provider: "bridge", PodCIDR: "10.0.0.0/99"}, nil, 0, "networking.podCIDR"},
		{"bad mode", config.NetworkingSpec{Mode: "weave"}, nil, 0, "networking.mode"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := Render(c.spec)
			if c.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantError) {
					t.Fatalf("err = %v, want %q", err, c.wantError)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Plugins) != c.plugins || len(p.Files) != len(c.files) {
				t.Fatalf("plan = %+v", p)
			}
			for i, f := range p.Files {
				if f.Path != c.files[i] {
					t.Fatalf("file %d = %s, want %s", i, f.Path, c.files[i])
				}
				var v map[string]any
				if err := json.Unmarshal(f.Content, &v); err != nil {
					t.Fatalf("%s is not JSON: %v", f.Path, err)
				}
				if !strings.Contains(string(f.Content), c.spec.PodCIDR) {
					t.Fatalf("%s does not carry the pod CIDR %s:\n%s", f.Path, c.spec.PodCIDR, f.Content)
				}
			}
		})
	}
}

// The kubenet configuration allocates from the node's range: two nodes get
// disjoint pools, whatever the cluster range.
func TestKubenetConfigUsesTheNodeRange(t *testing.T) {
	type ipam struct {
		Type   string `json:"type"`
		Ranges [][]struct {
			Subnet string `json:"subnet"`
		} `json:"ranges"`
	}
	type plugin struct {
		Type   string `json:"type"`
		Bridge string `json:"bridge"`
		IPMasq bool   `json:"ipMasq"`
		MTU    int    `json:"mtu"`
		IPAM   ipam   `json:"ipam"`
	}
	var conf struct {
		Name    string   `json:"name"`
		Plugins []plugin `json:"plugins"`
	}
	for _, c := range []struct {
		rng  string
		mtu  int
		want int
	}{{"100.96.1.0/24", 0, DefaultMTU}, {"100.96.2.0/24", 9001, 9001}} {
		f, err := KubenetConfig(netip.MustParsePrefix(c.rng), c.mtu)
		if err != nil {
			t.Fatal(err)
		}
		if f.Path != KubenetConfigPath {
			t.Fatalf("path %s, want %s", f.Path, KubenetConfigPath)
		}
		if err := json.Unmarshal(f.Content, &conf); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, f.Content)
		}
		if len(conf.Plugins) != 2 || conf.Plugins[0].Type != "bridge" || conf.Plugins[1].Type != "portmap" {
			t.Fatalf("plugins %+v, want bridge then portmap", conf.Plugins)
		}
		br := conf.Plugins[0]
		if br.Bridge != "cbr0" || br.IPMasq || br.MTU != c.want || br.IPAM.Type != "host-local" {
			t.Fatalf("bridge %+v", br)
		}
		if len(br.IPAM.Ranges) != 1 || len(br.IPAM.Ranges[0]) != 1 || br.IPAM.Ranges[0][0].Subnet != c.rng {
			t.Fatalf("ipam ranges %+v, want only %s", br.IPAM.Ranges, c.rng)
		}
	}
	for _, bad := range []netip.Prefix{{}, netip.MustParsePrefix("fd00::/64"), netip.MustParsePrefix("100.96.0.0/31")} {
		if _, err := KubenetConfig(bad, 0); err == nil || !strings.Contains(err.Error(), "node pod range") {
			t.Fatalf("KubenetConfig(%s): err %v, want a refusal naming the node pod range", bad, err)
		}
	}
}

func TestRenderIsDeterministic(t *testing.T) {
	s := config.NetworkingSpec{Mode: "cni", Provider: "bridge", PodCIDR: "100.96.1.0/24"}
	a, _ := Render(s)
	b, _ := Render(s)
	if string(a.Files[0].Content) != string(b.Files[0].Content) {
		t.Fatal("two renders differ")
	}
	x, _ := KubenetConfig(netip.MustParsePrefix("100.96.1.0/24"), 0)
	y, _ := KubenetConfig(netip.MustParsePrefix("100.96.1.0/24"), 0)
	if string(x.Content) != string(y.Content) {
		t.Fatal("two kubenet renders differ")
	}
}
