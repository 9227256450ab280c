package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// etcdClusters[].backups.retention in the cluster spec reaches the
// control-plane node configuration that nodeup render writes, and parses
// back from it; unset days stay unset (etcd-manager's defaults).
func TestRetentionCarriedToNodeConfig(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "examples", "cluster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(string(data), "      backups:\n        interval: 15m\n", "      backups:\n        interval: 15m\n        retention:\n          hourlyDays: 2\n          dailyDays: 30\n", 1)
	if src == string(data) {
		t.Fatal("examples/cluster.yaml has no main backups block to extend")
	}
	c, err := ParseCluster([]byte(src), "cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n := NewNodeConfig(c, "control-plane", RoleControlPlane)
	out, err := Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseNodeConfig(out, "control-plane.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range back.Spec.EtcdClusters {
		r := e.Backups.Retention
		switch e.Name {
		case "main":
			if r.HourlyDays == nil || *r.HourlyDays != 2 || r.DailyDays == nil || *r.DailyDays != 30 {
				t.Errorf("main retention %+v, want 2 and 30 days", r)
			}
		default:
			if r.HourlyDays != nil || r.DailyDays != nil {
				t.Errorf("%s retention %+v, want unset", e.Name, r)
			}
		}
	}
	bad := strings.Replace(src, "hourlyDays: 2", "hourlyDays: -2", 1)
	if _, err := ParseCluster([]byte(bad), "cluster.yaml"); err == nil || !strings.Contains(err.Error(), "spec.etcdClusters[0].backups.retention.hourlyDays") {
		t.Fatalf("a negative hourlyDays: %v, want an error naming the field", err)
	}
}
