package app

import (
	"flag"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/runconfig"
	"github.com/kopsnode/agents/nodeup/model"
	"github.com/kopsnode/agents/nodeup/tasks"
	"github.com/kopsnode/agents/pkg/config"
)

// The configuration's etcdClusters[].backups.retention reaches
// etcd-manager: set on events, the rendered unit parses back into that
// policy; unset on main, etcd-manager's defaults apply (7 and 90 days).
func TestRenderedUnitsCarryRetention(t *testing.T) {
	n, err := config.LoadNodeConfigFile(filepath.Join("..", "..", "examples", "nodeup", "control-plane.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]backup.Policy{}
	for i := range n.Spec.EtcdClusters {
		e := &n.Spec.EtcdClusters[i]
		want[e.Name] = backup.Policy{HourlyDays: 7, DailyDays: 90}
		if e.Name == "events" {
			e.Backups.Retention = config.RetentionSpec{HourlyDays: new(0), DailyDays: new(30)}
			want[e.Name] = backup.Policy{HourlyDays: 0, DailyDays: 30}
		}
	}
	if err := config.Validate(n); err != nil {
		t.Fatal(err)
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
		m, err := f.Manager()
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if got, w := m.Backups.Retention, want[f.EtcdCluster]; got != w {
			t.Errorf("%s: retention %+v, want %+v", id, got, w)
		}
		seen++
	}
	if seen != len(want) {
		t.Fatalf("%d etcd-manager units for %d etcd clusters", seen, len(want))
	}
}
