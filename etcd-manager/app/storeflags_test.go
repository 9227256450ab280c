package app

import (
	"flag"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kopsnode/agents/etcd-manager/runconfig"
	"github.com/kopsnode/agents/nodeup/model"
	"github.com/kopsnode/agents/nodeup/tasks"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/store/storeurl"
)

// The etcd-manager units nodeup renders carry the complete store settings
// (URL, endpoint, region, path style) and parse back with `run`'s own flags.
func TestRenderedUnitsCarryStoreSettings(t *testing.T) {
	n, err := config.LoadNodeConfigFile(filepath.Join("..", "..", "examples", "nodeup", "control-plane.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := storeurl.Settings{URL: "s3://state/clusters", Endpoint: "http://127.0.0.1:9000", Region: "eu-west-1", PathStyle: true}
	g, err := model.Build(&model.Input{Config: n, StoreURL: want.URL, StoreEndpoint: want.Endpoint, StoreRegion: want.Region, StorePathStyle: want.PathStyle,
		Group: "control-plane", Hostname: "cp-1", NodeAddress: netip.MustParseAddr("10.0.0.10")})
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, id := range g.IDs() {
		if !strings.HasPrefix(id, "unit:etcd-manager-") {
			continue
		}
		task, _ := g.Get(id)
		svc := task.(*tasks.Service)
		var args []string
		for _, l := range strings.Split(svc.Content, "\n") {
			if rest, ok := strings.CutPrefix(l, "ExecStart="); ok {
				args = strings.Fields(rest)
			}
		}
		if len(args) < 2 || args[1] != "run" {
			t.Fatalf("%s: ExecStart %q", id, args)
		}
		f := runconfig.DefaultConfig()
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		f.AddFlags(fs)
		if err := fs.Parse(args[2:]); err != nil || fs.NArg() != 0 {
			t.Fatalf("%s: etcd-manager run refuses its rendered flags %q: %v", id, args[2:], err)
		}
		if f.Store != want {
			t.Errorf("%s: store settings %+v, want %+v", id, f.Store, want)
		}
		if err := f.Store.Validate(); err != nil {
			t.Errorf("%s: %v", id, err)
		}
		seen++
	}
	if seen == 0 {
		t.Fatal("no etcd-manager unit rendered")
	}
}
