package aws_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/store/file"
	awsvol "github.com/kopsnode/agents/volumes/aws"
	"github.com/kopsnode/agents/volumes/aws/ec2local"
	"github.com/kopsnode/agents/volumes/slots"
)

// clock is a settable clock for slot leases.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type slotEnv struct {
	*env
	st     *file.Store
	layout control.Layout
	clk    *clock
}

func newSlotEnv(t *testing.T) *slotEnv {
	t.Helper()
	st, err := file.New(t.TempDir(), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &slotEnv{env: newEnv(t, ec2local.NVMeNaming, 50*time.Millisecond), st: st,
		layout: control.Layout{Cluster: "c1", EtcdCluster: "main"}, clk: &clock{t: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}}
}

func (e *slotEnv) acquirer(t *testing.T, p *awsvol.Provider, host string, members int) *slots.Acquirer {
	return &slots.Acquirer{
		Provider:  p,
		Leases:    slots.Leases{Store: e.st, Layout: e.layout, Machine: host, Duration: time.Minute},
		Members:   members,
		Spec:      config.VolumeSpec{SizeGiB: 1},
		CanCreate: true,
		Now:       e.clk.now,
		Log:       testLogger(t),
	}
}

// TestSlotsThroughEBS runs package slots' Acquirer over the aws provider: a
// machine claims the slot and creates its volume; a second machine cannot
// take the slot nor the volume while the first runs; after the first
// instance is terminated and its lease lapses, the replacement (a new host
// name) adopts the slot and the same volume.
func TestSlotsThroughEBS(t *testing.T) {
	e := newSlotEnv(t)
	ctx := ctxT(t)
	pa, ida := e.machine(t, zoneA)
	pb, idb := e.machine(t, zoneA)

	sel, v, err := e.acquirer(t, pa, "host-a", 1).Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire on host-a: %v", err)
	}
	if sel.Slot != "main-1" || v.Slot != "main-1" || v.ID == "" {
		t.Fatalf("host-a got slot %q volume %+v, want main-1 and a new volume", sel.Slot, v)
	}
	if _, err := pa.Attach(ctx, v); err != nil {
		t.Fatal(err)
	}

	_, _, err = e.acquirer(t, pb, "host-b", 1).Acquire(ctx)
	if !errors.Is(err, slots.ErrHeld) || !strings.Contains(err.Error(), "main-1") {
		t.Fatalf("Acquire on host-b while host-a holds main-1 = %v, want ErrHeld naming main-1", err)
	}
	// Even with host-a's lease lapsed, its volume is attached to a running
	// instance: not taken.
	e.clk.add(2 * time.Minute)
	_, _, err = e.acquirer(t, pb, "host-b", 1).Acquire(ctx)
	if !errors.Is(err, slots.ErrHeld) || !strings.Contains(err.Error(), ida) {
		t.Fatalf("Acquire on host-b with host-a's lease lapsed but its instance running = %v, want ErrHeld naming %s", err, ida)
	}
	if st, _ := e.srv.Volume(v.ID); st.Instance != ida {
		t.Fatalf("volume %+v, want still attached to %s", st, ida)
	}
	if n := len(e.srv.Volumes()); n != 1 {
		t.Fatalf("%d volumes exist, want 1", n)
	}

	// host-a's instance is terminated; the replacement adopts slot and volume.
	if err := e.srv.SetInstanceState(ida, ec2local.InstanceTerminated); err != nil {
		t.Fatal(err)
	}
	sel, v2, err := e.acquirer(t, pb, "host-b", 1).Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire on the replacement host-b: %v", err)
	}
	if sel.Slot != "main-1" || v2.ID != v.ID {
		t.Fatalf("replacement got slot %q volume %s, want main-1 and %s", sel.Slot, v2.ID, v.ID)
	}
	if _, err := pb.Attach(ctx, v2); err != nil {
		t.Fatalf("Attach on the replacement: %v", err)
	}
	if st, _ := e.srv.Volume(v.ID); st.Instance != idb || e.srv.Calls("DetachVolume") != 0 {
		t.Fatalf("volume %+v after %d DetachVolume calls, want attached to %s and never detached by a call", st, e.srv.Calls("DetachVolume"), idb)
	}
}

// TestTwoVolumesForOneSlot: two EBS volumes tagged with one slot are never
// chosen between; the error names both.
func TestTwoVolumesForOneSlot(t *testing.T) {
	e := newSlotEnv(t)
	ctx := ctxT(t)
	p, _ := e.machine(t, zoneA)
	tags := map[string]string{"kubernetes.io/cluster/c1": "owned", awsvol.EtcdClusterTag: "main", awsvol.SlotTag: "main-1"}
	v1 := e.srv.AddVolume(zoneA, 1, tags)
	v2 := e.srv.AddVolume(zoneA, 1, tags)
	_, _, err := e.acquirer(t, p, "host-a", 1).Acquire(ctx)
	// slots.Decide reports it among the reasons every slot is held (its
	// error wraps ErrHeld), so the message, not the kind, is checked.
	for _, want := range []string{v1, v2, "main-1", "refusing to choose"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Acquire with two volumes of main-1 = %v, want an error naming %q", err, want)
		}
	}
	if n := e.srv.Calls("AttachVolume") + e.srv.Calls("CreateVolume"); n != 0 {
		t.Fatalf("%d AttachVolume/CreateVolume calls, want none", n)
	}
}
