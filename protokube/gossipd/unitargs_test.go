package gossipd_test

import (
	"flag"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kopsnode/agents/nodeup/model"
	"github.com/kopsnode/agents/nodeup/tasks"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/store/storeurl"
	"github.com/kopsnode/agents/protokube/gossipd"
	"github.com/kopsnode/agents/protokube/podnet"
)

// execStart returns the arguments of a unit's ExecStart, program first.
func execStart(t *testing.T, in *model.Input, unit string) []string {
	t.Helper()
	g, err := model.Build(in)
	if err != nil {
		t.Fatal(err)
	}
	task, ok := g.Get("unit:" + unit)
	if !ok {
		t.Fatalf("no unit %s in the model", unit)
	}
	svc, ok := task.(*tasks.Service)
	if !ok {
		t.Fatalf("unit %s is a %T", unit, task)
	}
	for _, l := range strings.Split(svc.Content, "\n") {
		if rest, ok := strings.CutPrefix(l, "ExecStart="); ok {
			return strings.Fields(rest)
		}
	}
	t.Fatalf("unit %s has no ExecStart:\n%s", unit, svc.Content)
	return nil
}

// The protokube unit nodeup renders starts: its ExecStart parses with the
// daemon's own flags and passes validation, carrying the complete store
// settings, the keyring role and the pod network settings.
func TestRenderedUnitParsesWithDaemonFlags(t *testing.T) {
	settings := storeurl.Settings{URL: "s3://state/clusters", Endpoint: "http://127.0.0.1:9000", Region: "eu-west-1", PathStyle: true}
	for _, c := range []struct {
		group  string
		create bool
	}{{"control-plane", true}, {"nodes", false}} {
		t.Run(c.group, func(t *testing.T) {
			n, err := config.LoadNodeConfigFile(filepath.Join("..", "..", "examples", "nodeup", c.group+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			n.Spec.Networking.Mode, n.Spec.Networking.Provider = config.NetworkingKubenet, ""
			if c.group == "nodes" {
				n.Spec.Assets = append(n.Spec.Assets, config.Asset{Name: "protokube", SHA256: strings.Repeat("b", 64), URLs: []string{"https://mirror.example.com/protokube"}})
			}
			in := &model.Input{Config: n, StoreURL: settings.URL, StoreEndpoint: settings.Endpoint, StoreRegion: settings.Region, StorePathStyle: settings.PathStyle,
				Group: c.group, Hostname: "node-1", NodeAddress: netip.MustParseAddr("10.0.0.10")}
			args := execStart(t, in, "protokube.service")
			if len(args) < 2 || args[0] != "/usr/local/bin/protokube" || args[1] != "gossip" {
				t.Fatalf("ExecStart %q", args)
			}
			cfg := gossipd.DefaultConfig()
			fs := flag.NewFlagSet("gossip", flag.ContinueOnError)
			cfg.AddFlags(fs)
			if err := fs.Parse(args[2:]); err != nil {
				t.Fatalf("the daemon refuses its rendered flags %q: %v", args[2:], err)
			}
			if fs.NArg() != 0 {
				t.Fatalf("stray arguments %q", fs.Args())
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("rendered flags %q do not validate: %v", args[2:], err)
			}
			if cfg.Store != settings {
				t.Errorf("store settings %+v, want %+v", cfg.Store, settings)
			}
			if cfg.CreateKeyring != c.create {
				t.Errorf("--create-keyring %t on %s", cfg.CreateKeyring, c.group)
			}
			p := cfg.PodNet
			if p.Mode != podnet.ModeKubenet || p.ClusterCIDR != n.Spec.Networking.PodCIDR || p.NonMasqueradeCIDR != n.Spec.Networking.NonMasqueradeCIDR ||
				p.Kubeconfig != model.KubeletKubeconfig || p.NodeName != "node-1" {
				t.Errorf("pod network %+v", p)
			}
		})
	}
}
