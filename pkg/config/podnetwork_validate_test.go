package config

import (
	"path/filepath"
	"strings"
	"testing"
)

// kubenet nodes exchange pod ranges over gossip, so a kubenet cluster
// without gossip is refused; `gossip.seeds: aws` is refused because
// nothing could start the unit it would render.
func TestPodNetworkAndSeedsValidation(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Cluster)
		want string // "" for valid
	}{
		{"kubenet with gossip", func(c *Cluster) {}, ""},
		{"kubenet without gossip", func(c *Cluster) {
			c.Metadata.Name, c.Spec.Gossip = "example.com", nil
		}, `spec.gossip: required when networking.mode is "kubenet"`},
		{"cni without gossip", func(c *Cluster) {
			c.Metadata.Name, c.Spec.Gossip = "example.com", nil
			c.Spec.Networking.Mode, c.Spec.Networking.Provider = NetworkingCNI, "calico"
		}, ""},
		{"aws seeds", func(c *Cluster) { c.Spec.Gossip.Seeds = SeedsAWS }, `spec.gossip.seeds: "aws" is not supported in a configuration yet`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := LoadClusterFile(filepath.Join("..", "..", "examples", "cluster.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			c.Spec.Networking.Mode, c.Spec.Networking.Provider = NetworkingKubenet, ""
			tc.edit(c)
			err = c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
	// Node configurations are checked for aws seeds too.
	n, err := ParseNodeConfig([]byte(minimalNode+"  gossip: {seeds: aws}\n"), "t.yaml")
	if err == nil || !strings.Contains(err.Error(), `spec.gossip.seeds: "aws" is not supported`) {
		t.Fatalf("node configuration with aws seeds: %v %v", n, err)
	}
}
