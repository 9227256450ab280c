package manager_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kopsnode/agents/etcd-manager/app"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/harness"
	"github.com/kopsnode/agents/etcd-manager/manager"
	"github.com/kopsnode/agents/etcd-manager/quorum"
	"github.com/kopsnode/agents/etcd-manager/restore"
)

// TestRecoverQuorumFromBackup: three members, a key written, a full
// backup taken, a second key written after it; then two members are lost
// for good (killed, disks wiped) and the survivor's data is declared
// unusable by recovering from the backup instead. The two machines are
// replaced (empty disks, the same slots) so that a quorum of etcd-manager
// instances elects a leader; `etcd-manager-ctl recover-quorum
// --from-backup latest` prints the plan and queues nothing, and with
// --yes queues a restore that brings back three healthy members holding
// the first key and not the second, the survivor's old data kept aside.
func TestRecoverQuorumFromBackup(t *testing.T) {
	t.Parallel()
	c := harness.New(t, harness.Options{IPPrefix: "127.44.230", Versions: []string{version}, Mutate: func(cfg *manager.Config) {
		// The only full backup is the one backup-now takes: no schedule,
		// and no delta chain (whose start takes a full backup of its own,
		// racing with backup-now's, so "latest" would be either).
		cfg.Backups.Interval = 0
		cfg.Backups.DeltaInterval = 0
	}})
	c.SetSpec(3, version)
	ids := startN(c, 3)
	c.WaitMembers(converge, ids...)
	c.Put("/before", "in-backup")
	name := backupNow(t, c)
	c.Put("/after", "not-in-backup")
	for _, id := range []string{"m2", "m3"} {
		c.Kill(id)
		c.Wipe(id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*converge)
	defer cancel()
	m1 := c.Instance("m1").M
	c.Eventually(converge, "the survivor sees the quorum lost", func() error {
		st, _ := m1.Status(ctx)
		if q := st.QuorumLoss; q == nil || q.Plan == nil || !q.Plan.Lost {
			return fmt.Errorf("quorum loss status %+v", q)
		}
		return nil
	})

	// The lost machines are replaced (empty disks, the same slots): with
	// three etcd-manager instances there is a leader to run the restore.
	c.Start(2)
	c.Start(3)
	c.WaitLeader(converge)

	before, err := control.ListCommands(ctx, c.Store, c.Layout)
	if err != nil {
		t.Fatal(err)
	}
	common := []string{"--store", c.Store.URL(), "--cluster-name", c.Layout.Cluster, "--etcd-cluster", c.Layout.EtcdCluster}
	var out, errs string
	var code int
	// The plan names the survivor's data as discarded (kept aside) once
	// its quorum-loss report is in the store.
	c.Eventually(converge, "recover-quorum --from-backup latest prints the plan", func() error {
		out, errs, code = runCtl(t, append([]string{"recover-quorum", "--from-backup", "latest"}, common...)...)
		if code != 0 || !strings.Contains(out, "source: full backup "+name) || !strings.Contains(out, "nothing changed") ||
			!strings.Contains(out, "the data of surviving member m1") {
			return fmt.Errorf("recover-quorum --from-backup latest (plan): %d %q %q", code, out, errs)
		}
		return nil
	})
	t.Logf("recover-quorum --from-backup latest:\n%s", out)
	if cs, err := control.ListCommands(ctx, c.Store, c.Layout); err != nil || len(cs) != len(before) {
		t.Fatalf("commands after a plan without --yes: %v %v; before it: %v", cs, err, before)
	}

	out, errs, code = runCtl(t, append([]string{"recover-quorum", "--from-backup", "latest", "--yes", "-o", "json"}, common...)...)
	var rq app.QuorumRecovery
	if code != 0 || json.Unmarshal([]byte(out), &rq) != nil || rq.Queued == "" || rq.Plan.Source != quorum.SourceBackup || rq.Plan.Backup != name {
		t.Fatalf("recover-quorum --from-backup latest --yes: %d %q %q", code, out, errs)
	}
	if want := (restore.Target{Backup: name}).Kind(); rq.Kind != want {
		t.Fatalf("queued a %s command, want %s", rq.Kind, want)
	}
	c.Eventually(2*converge, "the restore's result", func() error {
		res, ok, err := control.ReadResult(ctx, c.Store, c.Layout, rq.Queued)
		if err != nil || !ok {
			return fmt.Errorf("no result yet (%v)", err)
		}
		if res.Error != "" {
			t.Fatalf("restore result %+v", res)
		}
		return nil
	})
	c.WaitMembers(converge, ids...)
	c.ExpectKey(converge, "/before", "in-backup", ids...)
	cl := c.Client(ids...)
	if kvs := mustGet(t, cl, "/after").Kvs; len(kvs) != 0 {
		t.Fatalf("a key written after the backup survived the recovery: %v", kvs)
	}
	asides, err := restore.AsideDirs(c.Instance("m1").DataDir)
	if err != nil || len(asides) == 0 {
		t.Fatalf("m1: moved-aside data dirs %v, %v; want the survivor's old data kept", asides, err)
	}
	var kept bool
	for _, a := range asides {
		if _, err := os.Stat(filepath.Join(a, "member", "snap", "db")); err == nil {
			kept = true
		}
	}
	if !kept {
		t.Fatalf("m1: none of %v holds the old database", asides)
	}
	c.Put("/after-recovery", "yes")
	c.ExpectKey(converge, "/after-recovery", "yes", ids...)
}
