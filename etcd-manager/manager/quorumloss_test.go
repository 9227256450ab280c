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
	"github.com/kopsnode/agents/etcd-manager/quorum"
)

// TestRecoverQuorumFromSurvivor: three members, two of them lost for good
// (killed, disks wiped). Nothing moves by itself: the survivor's status
// shows the plan (itself, by raft index), and `etcd-manager-ctl
// recover-quorum` prints the same plan and queues nothing; a member that
// is not a survivor is refused. With --yes the survivor takes the lease
// although it reaches no quorum of managers, keeps its data aside, and
// comes back as a one-member cluster holding the data written before;
// when the two machines are replaced (empty disks), they join as learners
// and the cluster has three members again.
func TestRecoverQuorumFromSurvivor(t *testing.T) {
	t.Parallel()
	c := harness.New(t, harness.Options{IPPrefix: "127.44.152", Versions: []string{version}})
	c.SetSpec(3, version)
	ids := startN(c, 3)
	c.WaitMembers(converge, ids...)
	c.Put("/before", "survives")
	for _, id := range []string{"m2", "m3"} {
		c.Kill(id)
		c.Wipe(id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), converge)
	defer cancel()
	m1 := c.Instance("m1").M
	c.Eventually(converge, "the survivor's status shows the recovery plan", func() error {
		st, _ := m1.Status(ctx)
		q := st.QuorumLoss
		if q == nil || q.Plan == nil || !q.Plan.Lost || q.Plan.Source != quorum.SourceMember || q.Plan.Member != "m1" || q.Plan.RaftIndex == 0 {
			if q != nil && q.Plan != nil {
				return fmt.Errorf("quorum loss plan %+v", *q.Plan)
			}
			return fmt.Errorf("quorum loss status %+v", q)
		}
		return nil
	})
	if ls := c.Leaders(); len(ls) != 0 {
		t.Fatalf("leaders %v without a quorum", ls)
	}
	common := []string{"--store", c.Store.URL(), "--cluster-name", c.Layout.Cluster, "--etcd-cluster", c.Layout.EtcdCluster}
	var out string
	c.Eventually(converge, "recover-quorum prints the plan", func() error {
		var errs string
		var code int
		out, errs, code = runCtl(t, append([]string{"recover-quorum"}, common...)...)
		if code != 0 || !strings.Contains(out, "source: member m1") || !strings.Contains(out, "nothing changed") {
			return fmt.Errorf("recover-quorum: %d %q %q", code, out, errs)
		}
		return nil
	})
	for _, s := range []string{"discards: every member but m1 is removed", "m1: holds the cluster's data"} {
		if !strings.Contains(out, s) {
			t.Errorf("recover-quorum output lacks %q:\n%s", s, out)
		}
	}
	if cs, err := control.ListCommands(ctx, c.Store, c.Layout); err != nil || len(cs) != 0 {
		t.Fatalf("commands after a plan without --yes: %v %v", cs, err)
	}
	if _, errs, code := runCtl(t, append([]string{"recover-quorum", "--from-member", "m2", "--yes"}, common...)...); code == 0 || !strings.Contains(errs, "member m2 is not a surviving member") {
		t.Fatalf("recover-quorum from a lost member: %d %q", code, errs)
	}
	out, errs, code := runCtl(t, append([]string{"recover-quorum", "--yes", "-o", "json"}, common...)...)
	var rq app.QuorumRecovery
	if code != 0 || json.Unmarshal([]byte(out), &rq) != nil || rq.Queued == "" || rq.Kind != control.KindRecoverQuorum || rq.Plan.Member != "m1" {
		t.Fatalf("recover-quorum --yes: %d %q %q", code, out, errs)
	}
	c.Eventually(converge, "the recovery's result", func() error {
		res, ok, err := control.ReadResult(ctx, c.Store, c.Layout, rq.Queued)
		if err != nil || !ok {
			return fmt.Errorf("no result yet (%v)", err)
		}
		if res.Error != "" || !strings.Contains(res.Detail, "recovered from member m1") {
			t.Fatalf("result %+v", res)
		}
		return nil
	})
	c.WaitMembers(converge, "m1")
	c.ExpectKey(converge, "/before", "survives", "m1")
	aside, _ := filepath.Glob(filepath.Join(c.Instance("m1").DataDir, "etcd-before-recover-quorum-*", "member"))
	if len(aside) != 1 {
		t.Fatalf("data kept aside: %v, want one copy of the member directory", aside)
	}
	if _, err := os.Stat(filepath.Join(aside[0], "snap", "db")); err != nil {
		t.Fatalf("the copy kept aside has no database: %v", err)
	}
	c.Put("/after-recovery", "yes")

	// The lost machines are replaced: empty disks, the same slots.
	c.Start(2)
	c.Start(3)
	c.WaitMembers(converge, ids...)
	c.ExpectKey(converge, "/before", "survives", ids...)
	c.ExpectKey(converge, "/after-recovery", "yes", ids...)
	c.Eventually(converge, "no quorum loss in status", func() error {
		for _, id := range ids {
			st, _ := c.Instance(id).M.Status(ctx)
			if st.QuorumLoss != nil {
				return fmt.Errorf("%s: quorum loss %+v", id, st.QuorumLoss)
			}
		}
		return nil
	})
}

// TestRecoverQuorumRefusedWithQuorum: a recover-quorum command queued
// while the cluster is healthy (the named member is fine, or on the
// minority side of a partition) is refused by the leader with a result
// saying so; nothing changes.
func TestRecoverQuorumRefusedWithQuorum(t *testing.T) {
	t.Parallel()
	c := harness.New(t, harness.Options{IPPrefix: "127.44.153", Versions: []string{version}})
	c.SetSpec(3, version)
	ids := startN(c, 3)
	c.WaitMembers(converge, ids...)
	c.Put("/k", "v")
	ctx, cancel := context.WithTimeout(context.Background(), converge)
	defer cancel()
	cmd := control.Command{ID: "20261130T000000.000Z-recover-quorum", Kind: control.KindRecoverQuorum, Args: map[string]string{"member": "m2"}}
	if err := control.QueueCommand(ctx, c.Store, c.Layout, cmd); err != nil {
		t.Fatal(err)
	}
	c.Eventually(converge, "the command's result", func() error {
		res, ok, err := control.ReadResult(ctx, c.Store, c.Layout, cmd.ID)
		if err != nil || !ok {
			return fmt.Errorf("no result yet (%v)", err)
		}
		if !strings.Contains(res.Error, "has a quorum") || !strings.Contains(res.Error, "nothing changed") {
			t.Fatalf("result %+v, want a refusal", res)
		}
		return nil
	})
	c.WaitMembers(converge, ids...)
	c.ExpectKey(converge, "/k", "v", ids...)
	for _, id := range ids {
		if aside, _ := filepath.Glob(filepath.Join(c.Instance(id).DataDir, "etcd-before-recover-quorum-*")); len(aside) != 0 {
			t.Fatalf("%s: data moved aside %v", id, aside)
		}
	}
}
