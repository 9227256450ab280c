package aws_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/testtools"
	"github.com/kopsnode/agents/volumes"
	"github.com/kopsnode/agents/volumes/aws/ec2local"
	"github.com/kopsnode/agents/volumes/internal/looptest"
)

// TestEnsureThroughEBS runs volumes.Ensure through the aws provider with a
// real loop device standing in for the EBS volume (ec2local links the NVMe
// by-id name to it when the volume is attached): a new volume is created,
// attached, formatted and mounted; after its instance is terminated, a
// replacement instance adopts it and mounts the same data, unformatted.
// Needs root (loop devices, mount).
func TestEnsureThroughEBS(t *testing.T) {
	testtools.RequireRoot(t)
	e := newEnv(t, ec2local.NVMeNaming, 50*time.Millisecond)
	ctx := ctxT(t)
	opts := volumes.Options{Logger: testLogger(t), PollInterval: 20 * time.Millisecond, DeviceTimeout: 10 * time.Second}
	sel := volumes.Selector{Cluster: "ensure.k8s.local", EtcdCluster: "main", Slot: "main-1"}

	p1, id1 := e.machine(t, zoneA)
	v, err := p1.Create(ctx, sel, config.VolumeSpec{SizeGiB: 1})
	if err != nil {
		t.Fatal(err)
	}
	loop, _ := looptest.Device(t, 32<<20)
	if err := e.srv.SetBacking(v.ID, loop); err != nil {
		t.Fatal(err)
	}
	target1 := filepath.Join(t.TempDir(), "m1", "mnt", "etcd", "main")
	looptest.UnmountOnCleanup(t, target1)
	res, err := volumes.Ensure(ctx, p1, sel, v, target1, opts)
	if err != nil {
		t.Fatalf("Ensure on %s: %v", id1, err)
	}
	if !res.Formatted || res.Device != loop || res.Identity.Selector != sel {
		t.Fatalf("Ensure on %s = %+v, want %s formatted with identity %v", id1, res, loop, sel)
	}
	if err := os.WriteFile(filepath.Join(target1, "member-data"), []byte("kept"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The machine dies: its mount goes with it, then the instance.
	if err := unix.Unmount(target1, 0); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.SetInstanceState(id1, ec2local.InstanceTerminated); err != nil {
		t.Fatal(err)
	}

	p2, id2 := e.machine(t, zoneA)
	vols, err := p2.List(ctx, sel.Cluster, sel.EtcdCluster)
	if err != nil || len(vols) != 1 || vols[0].Slot != sel.Slot {
		t.Fatalf("List on the replacement = %+v, %v; want the volume of slot %s", vols, err, sel.Slot)
	}
	if vols[0].Attachment.State == volumes.AttachedElsewhere {
		if err := p2.Detach(ctx, vols[0]); err != nil {
			t.Fatalf("Detach (waiting for the terminated instance to release it): %v", err)
		}
	}
	target2 := filepath.Join(t.TempDir(), "m2", "mnt", "etcd", "main")
	looptest.UnmountOnCleanup(t, target2)
	res, err = volumes.Ensure(ctx, p2, sel, vols[0], target2, opts)
	if err != nil {
		t.Fatalf("Ensure on the replacement %s: %v", id2, err)
	}
	if res.Formatted || res.Device != loop {
		t.Fatalf("Ensure on the replacement = %+v, want %s mounted without formatting", res, loop)
	}
	if b, err := os.ReadFile(filepath.Join(target2, "member-data")); err != nil || string(b) != "kept" {
		t.Fatalf("member data on the replacement: %q, %v; want \"kept\"", b, err)
	}
	if st, _ := e.srv.Volume(v.ID); st.Instance != id2 {
		t.Fatalf("volume %+v, want attached to %s", st, id2)
	}
	if err := unix.Unmount(target2, 0); err != nil {
		t.Fatal(err)
	}
}
