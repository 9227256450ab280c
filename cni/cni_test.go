package cni

import (
	"encoding/json"
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
		{"kubenet", config.NetworkingSpec{Mode: "kubenet", PodCIDR: "100.96.1.0/24"}, []string{"/etc/cni/net.d/10-kubenet.conflist"}, 4, ""},
		{"cni bridge", config.NetworkingSpec{Mode: "cni", Provider: "bridge", PodCIDR: "10.1.0.0/16", MTU: 9001}, []string{"/etc/cni/net.d/10-bridge.conflist"}, 4, ""},
		{"cni calico", config.NetworkingSpec{Mode: "cni", Provider: "calico"}, nil, 4, ""},
		{"external", config.NetworkingSpec{Mode: "external"}, nil, 0, ""},
		{"cni without provider", config.NetworkingSpec{Mode: "cni"}, nil, 0, "networking.provider"},
		{"bad cidr", config.NetworkingSpec{Mode: "kubenet", PodCIDR: "10.0.0.0/99"}, nil, 0, "networking.podCIDR"},
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

func TestRenderIsDeterministic(t *testing.T) {
	s := config.NetworkingSpec{Mode: "kubenet", PodCIDR: "100.96.1.0/24"}
	a, _ := Render(s)
	b, _ := Render(s)
	if string(a.Files[0].Content) != string(b.Files[0].Content) {
		t.Fatal("two renders differ")
	}
}
