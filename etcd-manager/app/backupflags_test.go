package app

import (
	"flag"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/etcd-manager/runconfig"
	"github.com/kopsnode/agents/nodeup/model"
	"github.com/kopsnode/agents/nodeup/tasks"
	"github.com/kopsnode/agents/pkg/config"
)

// The configuration's etcdClusters[].backups reach etcd-manager: the
// rendered units parse back with `run`'s flags into the backup interval
// and store of each etcd cluster.
func TestRenderedUnitsCarryBackupSettings(t *testing.T) {
	n, err := config.LoadNodeConfigFile(filepath.Join("..", "..", "examples", "nodeup", "control-plane.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		interval time.Duration
		store    string
	}{}
	for i := range n.Spec.EtcdClusters {
		e := &n.Spec.EtcdClusters[i]
		if e.Name == "events" {
			e.Backups.Store = "gs://backups/etcd"
		}
		d, err := time.ParseDuration(e.Backups.Interval)
		if err != nil {
			t.Fatalf("%s: backups.interval %q: %v", e.Name, e.Backups.Interval, err)
		}
		want[e.Name] = struct {
			interval time.Duration
			store    string
		}{d, e.Backups.Store}
	}
	g, err := model.Build(&model.Input{Config: n, StoreURL: "file:///srv/store", Group: "control-plane", Hostname: "cp-1", NodeAddress: netip.MustParseAddr("10.0.0.10")})
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, id := range g.IDs() {
		if !strings.HasPrefix(id, "unit:etcd-manager-") {
			continue
		}
		task, _ := g.Get(id)
		var args []string
		for _, l := range strings.Split(task.(*tasks.Service).Content, "\n") {
			if rest, ok := strings.CutPrefix(l, "ExecStart="); ok {
				args = strings.Fields(rest)
			}
		}
		f := runconfig.DefaultConfig()
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		f.AddFlags(fs)
		if err := fs.Parse(args[2:]); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		w, ok := want[f.EtcdCluster]
		if !ok {
			t.Fatalf("%s: etcd cluster %q", id, f.EtcdCluster)
		}
		if f.BackupInterval != w.interval || f.BackupStore != w.store {
			t.Errorf("%s: backup interval %s, store %q; want %s, %q", id, f.BackupInterval, f.BackupStore, w.interval, w.store)
		}
		seen++
	}
	if seen != len(want) {
		t.Fatalf("%d etcd-manager units for %d etcd clusters", seen, len(want))
	}
}
