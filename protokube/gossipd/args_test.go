package gossipd

import (
	"flag"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/pkg/flagargs"
	"github.com/kopsnode/agents/pkg/logging"
	"github.com/kopsnode/agents/pkg/store/storeurl"
	"github.com/kopsnode/agents/protokube/podnet"
)

// fullConfig changes every field from its default, so a round trip of it
// proves Args renders every flag AddFlags binds.
func fullConfig() Config {
	return Config{
		Cluster:       "example.k8s.local",
		Store:         storeurl.Settings{URL: "s3://state/clusters", Endpoint: "http://127.0.0.1:9000", Region: "eu-west-1", PathStyle: true},
		NodeName:      "cp-1",
		CreateKeyring: true,
		KeyringWait:   3 * time.Second,
		Bind:          "10.0.0.1:4000",
		Advertise:     "10.0.0.1",
		Seeds:         "aws",
		StaticSeeds:   stringList{"10.0.0.2:3996", "10.0.0.3:3996"},
		AWSTags:       stringList{"k=v", "role=cp"},
		AWSRegion:     "eu-west-1",
		SeedTTL:       time.Minute,
		DNSListen:     "127.0.0.2:53",
		DNSZone:       "zone.example.",
		DNSForward:    true,
		HostsFile:     "/tmp/hosts",
		Publish:       stringList{"api=self", "x=10.0.0.9,10.0.0.8"},
		StatusAddr:    "127.0.0.1:4993",
		LeaveGrace:    time.Minute,
		Fast:          true,
		PodNet: podnet.Config{Mode: podnet.ModeKubenet, Kubeconfig: "/k", NodeName: "n", ClusterCIDR: "100.96.0.0/11",
			NonMasqueradeCIDR: "100.64.0.0/10", CNIConfDir: "/c", MTU: 1400, Resync: time.Minute},
		Log: logging.Options{Format: "json", Level: "debug"},
	}
}

// Args is the exact inverse of AddFlags, for the defaults and for a
// configuration with every field set; the full one sets every flag.
func TestConfigArgsRoundTrip(t *testing.T) {
	for name, c := range map[string]Config{"defaults": DefaultConfig(), "full": fullConfig()} {
		t.Run(name, func(t *testing.T) {
			got := DefaultConfig()
			fs := flag.NewFlagSet("gossip", flag.ContinueOnError)
			got.AddFlags(fs)
			if err := fs.Parse(c.Args()); err != nil {
				t.Fatalf("%q: %v", c.Args(), err)
			}
			if !reflect.DeepEqual(got, c) {
				t.Fatalf("%q parsed to\n%+v, want\n%+v", c.Args(), got, c)
			}
			if u := flagargs.Unset(fs); name == "full" && len(u) > 0 {
				t.Errorf("Args does not render flags %q", u)
			}
		})
	}
}

// A static seed may name its host, as the configuration's
// gossip.staticSeeds allows (memberlist resolves it); it needs a port.
func TestStaticSeedsByName(t *testing.T) {
	c := fullConfig()
	c.Seeds, c.StaticSeeds = "static", stringList{"cp-0.internal.example.k8s.local:3996", "10.0.0.2:3996"}
	if err := c.Validate(); err != nil {
		t.Fatalf("seeds by name refused: %v", err)
	}
	for _, bad := range []string{"cp-0.internal.example.k8s.local", ":3996", "cp-0:0", "cp-0:x"} {
		c.StaticSeeds = stringList{bad}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--static-seed[0]") {
			t.Errorf("static seed %q: %v", bad, err)
		}
	}
}
