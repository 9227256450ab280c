package slots

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/file"
	"github.com/kopsnode/agents/volumes"
)

var (
	t0        = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	slots3    = []string{"main-1", "main-2", "main-3"}
	here      = volumes.Attachment{State: volumes.AttachedHere}
	free      = volumes.Attachment{State: volumes.NotAttached}
	running   = volumes.Attachment{State: volumes.AttachedElsewhere, Instance: "i-run", InstanceRunning: true}
	stopped   = volumes.Attachment{State: volumes.AttachedElsewhere, Instance: "i-stop"}
	current   = t0.Add(time.Minute)  // a lease still held at t0
	lapsed    = t0.Add(-time.Second) // a lease lapsed at t0
	blankDisk = volumes.Volume{ID: "/dev/vdb", Device: "/dev/vdb", Attachment: here}
)

func rec(slot, holder string, until time.Time) Held {
	return Held{Record: Record{Slot: slot, Holder: holder, HeldUntil: until}, Version: store.Version("v-" + slot)}
}

func vol(id, slot string, a volumes.Attachment) volumes.Volume {
	return volumes.Volume{ID: id, Slot: slot, Attachment: a}
}

// otherZone marks a volume out of this machine's reach, as the aws
// provider lists a volume of another availability zone.
func otherZone(v volumes.Volume) volumes.Volume {
	v.Unreachable = "in zone us-east-1b, this instance in us-east-1a"
	return v
}

// TestDecide is the slot decision, case by case.
func TestDecide(t *testing.T) {
	cases := []struct {
		name      string
		vols      []volumes.Volume
		recs      []Held
		canCreate bool
		slots     []string // default slots3
		want      Action
		slot      string
		volume    string
		cond      store.Condition
		errIs     error
		errHas    string
	}{
		{name: "first machine, blank disk: claims slot 1 create-if-absent",
			vols: []volumes.Volume{blankDisk}, want: NewVolume, slot: "main-1", volume: "/dev/vdb", cond: store.Condition{IfAbsent: true}},
		{name: "second machine: the next free slot",
			vols: []volumes.Volume{blankDisk}, recs: []Held{rec("main-1", "a", current)}, want: NewVolume, slot: "main-2", volume: "/dev/vdb", cond: store.Condition{IfAbsent: true}},
		{name: "cloud: no disk, creates the volume of a free slot",
			canCreate: true, recs: []Held{rec("main-1", "a", current)}, vols: []volumes.Volume{vol("vol-1", "main-1", running)},
			want: NewVolume, slot: "main-2", cond: store.Condition{IfAbsent: true}},
		{name: "cloud: a lapsed slot's volume in another zone is not adopted; a free slot gets a new volume",
			canCreate: true, recs: []Held{rec("main-1", "dead", lapsed)}, vols: []volumes.Volume{otherZone(vol("vol-1", "main-1", free))},
			want: NewVolume, slot: "main-2", cond: store.Condition{IfAbsent: true}},
		{name: "cloud: its own record for a slot whose volume is in another zone lapses; a free slot instead",
			canCreate: true, recs: []Held{rec("main-1", "me", current)}, vols: []volumes.Volume{otherZone(vol("vol-1", "main-1", free))},
			want: NewVolume, slot: "main-2", cond: store.Condition{IfAbsent: true}},
		{name: "cloud: the only slot's volume is in another zone: wait, naming why",
			recs: []Held{rec("main-1", "dead", lapsed)}, vols: []volumes.Volume{otherZone(vol("vol-1", "main-1", free))}, slots: []string{"main-1"},
			want: Wait, errIs: ErrHeld, errHas: "cannot be attached to this machine (in zone us-east-1b"},
		{name: "metal without a disk waits and says so",
			want: Wait, errIs: ErrNoDisk},
		{name: "restart: its own volume here, its own lease",
			vols: []volumes.Volume{vol("/dev/vdb", "main-2", here)}, recs: []Held{rec("main-2", "me", current)},
			want: UseVolume, slot: "main-2", volume: "/dev/vdb", cond: store.Condition{IfVersion: "v-main-2"}},
		{name: "disk moved from a dead machine, its lease lapsed: adopted",
			vols: []volumes.Volume{vol("/dev/vdb", "main-2", here)}, recs: []Held{rec("main-2", "dead", lapsed)},
			want: UseVolume, slot: "main-2", volume: "/dev/vdb", cond: store.Condition{IfVersion: "v-main-2"}},
		{name: "a slot's volume here while another machine's lease is current: wait",
			vols: []volumes.Volume{vol("/dev/vdb", "main-1", here)}, recs: []Held{rec("main-1", "a", current)},
			want: Wait, errIs: ErrHeld, errHas: "volume /dev/vdb of slot main-1 is attached to this machine, but the slot is held by machine a"},
		{name: "a held slot's volume here is left alone; a blank disk takes a free slot",
			vols: []volumes.Volume{vol("/dev/vdb", "main-1", here), {ID: "/dev/vdc", Device: "/dev/vdc", Attachment: here}}, recs: []Held{rec("main-1", "a", current)},
			want: NewVolume, slot: "main-2", volume: "/dev/vdc"},
		{name: "its own volume here beside one of a held slot: uses its own",
			vols: []volumes.Volume{vol("/dev/vdb", "main-1", here), vol("/dev/vdc", "main-2", here)}, recs: []Held{rec("main-1", "a", current), rec("main-2", "me", current)},
			want: UseVolume, slot: "main-2", volume: "/dev/vdc"},
		{name: "volumes of two slots here: refuse",
			vols: []volumes.Volume{vol("/dev/vdb", "main-1", here), vol("/dev/vdc", "main-2", here)},
			want: Wait, errIs: volumes.ErrAmbiguous, errHas: "/dev/vdc (slot main-2)"},
		{name: "two volumes carry the slot of the one here: refuse",
			vols: []volumes.Volume{vol("/dev/vdb", "main-1", here), vol("vol-x", "main-1", free)},
			want: Wait, errIs: volumes.ErrAmbiguous, errHas: "vol-x"},
		{name: "replacement: adopts the free volume of a lapsed slot",
			canCreate: true, vols: []volumes.Volume{vol("vol-1", "main-1", running), vol("vol-2", "main-2", free)},
			recs: []Held{rec("main-1", "a", current), rec("main-2", "dead", lapsed)},
			want: AdoptVolume, slot: "main-2", volume: "vol-2", cond: store.Condition{IfVersion: "v-main-2"}},
		{name: "replacement: adopts a volume still attached to a stopped machine",
			canCreate: true, vols: []volumes.Volume{vol("vol-2", "main-2", stopped)}, recs: []Held{rec("main-2", "dead", lapsed)},
			want: AdoptVolume, slot: "main-2", volume: "vol-2"},
		{name: "a free volume whose slot lease is current is not taken",
			canCreate: true, vols: []volumes.Volume{vol("vol-1", "main-1", free)}, recs: []Held{rec("main-1", "a", current)},
			want: NewVolume, slot: "main-2"},
		{name: "a volume attached to a running machine is never taken, even with a lapsed lease",
			vols: []volumes.Volume{vol("vol-1", "main-1", running)}, recs: []Held{rec("main-1", "a", lapsed), rec("main-2", "b", current), rec("main-3", "c", current)},
			canCreate: true, want: Wait, errIs: ErrHeld, errHas: "attached to i-run, which is running"},
		{name: "own lease without a volume yet: goes on with it",
			vols: []volumes.Volume{blankDisk}, recs: []Held{rec("main-1", "a", current), rec("main-3", "me", current)},
			want: NewVolume, slot: "main-3", volume: "/dev/vdb", cond: store.Condition{IfVersion: "v-main-3"}},
		{name: "own lease, its volume free: adopts it",
			canCreate: true, vols: []volumes.Volume{vol("vol-3", "main-3", free)}, recs: []Held{rec("main-3", "me", current)},
			want: AdoptVolume, slot: "main-3", volume: "vol-3"},
		{name: "a lapsed slot without a visible volume: taken for a new volume",
			vols: []volumes.Volume{blankDisk}, recs: []Held{rec("main-1", "a", current), rec("main-2", "b", current), rec("main-3", "dead", lapsed)},
			want: NewVolume, slot: "main-3", volume: "/dev/vdb", cond: store.Condition{IfVersion: "v-main-3"}},
		{name: "every slot held: wait, naming the holders",
			vols: []volumes.Volume{blankDisk}, recs: []Held{rec("main-1", "a", current), rec("main-2", "b", current), rec("main-3", "c", current)},
			want: Wait, errIs: ErrHeld, errHas: "slot main-3 is held by machine c until 2026-11-30T12:01:00Z"},
		{name: "two chosen disks: refuse",
			vols: []volumes.Volume{blankDisk, {ID: "/dev/vdc", Device: "/dev/vdc", Attachment: here}},
			want: Wait, errIs: volumes.ErrAmbiguous, errHas: "/dev/vdc"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			recs := map[string]Held{}
			for _, r := range tc.recs {
				recs[r.Slot] = r
			}
			slots := slots3
			if tc.slots != nil {
				slots = tc.slots
			}
			d := Decide(Input{Machine: "me", Slots: slots, Volumes: tc.vols, Records: recs, Now: t0, CanCreate: tc.canCreate})
			if d.Action != tc.want {
				t.Fatalf("Decide = %+v (err %v), want %s", d, d.Err, tc.want)
			}
			if tc.want == Wait {
				if !errors.Is(d.Err, tc.errIs) || !strings.Contains(d.Err.Error(), tc.errHas) {
					t.Fatalf("Wait error %v, want %v containing %q", d.Err, tc.errIs, tc.errHas)
				}
				return
			}
			if d.Slot != tc.slot {
				t.Errorf("slot %s, want %s", d.Slot, tc.slot)
			}
			gotVol := ""
			if d.Volume != nil {
				gotVol = d.Volume.ID
			}
			if gotVol != tc.volume {
				t.Errorf("volume %q, want %q", gotVol, tc.volume)
			}
			if tc.cond != (store.Condition{}) && d.Cond != tc.cond {
				t.Errorf("condition %+v, want %+v", d.Cond, tc.cond)
			}
		})
	}
}

func newStore(t *testing.T) store.Store {
	t.Helper()
	st, err := file.New(t.TempDir(), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

var layout = control.Layout{Cluster: "c.k8s.local", EtcdCluster: "main"}

// TestLeases: create-if-absent and compare-and-swap decide races; a lapsed
// lease is taken over, a current one is not renewed by another machine.
func TestLeases(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	a := Leases{Store: st, Layout: layout, Machine: "a", Duration: time.Minute}
	b := Leases{Store: st, Layout: layout, Machine: "b", Duration: time.Minute}

	ha, err := a.Write(ctx, "main-1", "/dev/vdb", time.Time{}, t0, store.Condition{IfAbsent: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write(ctx, "main-1", "/dev/vdb", time.Time{}, t0, store.Condition{IfAbsent: true}); !errors.Is(err, ErrLost) {
		t.Fatalf("second create-if-absent = %v, want ErrLost", err)
	}
	recs, err := b.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r := recs["main-1"]; r.Holder != "a" || r.Volume != "/dev/vdb" || !r.HeldUntil.Equal(t0.Add(time.Minute)) || r.Version != ha.Version {
		t.Fatalf("record read %+v, want a's until %s", r, t0.Add(time.Minute))
	}
	// b may not renew a's current lease.
	if _, err := b.Renew(ctx, "main-1", "", t0.Add(30*time.Second)); !errors.Is(err, ErrLost) || !strings.Contains(err.Error(), "held by machine a") {
		t.Fatalf("b renewing a's lease = %v, want ErrLost naming a", err)
	}
	// a renews; since is kept.
	ha2, err := a.Renew(ctx, "main-1", "", t0.Add(30*time.Second))
	if err != nil || !ha2.Since.Equal(t0) || !ha2.HeldUntil.Equal(t0.Add(90*time.Second)) || ha2.Volume != "/dev/vdb" {
		t.Fatalf("renew = %+v, %v", ha2, err)
	}
	// A stale version loses.
	if _, err := b.Write(ctx, "main-1", "x", time.Time{}, t0.Add(time.Hour), store.Condition{IfVersion: ha.Version}); !errors.Is(err, ErrLost) {
		t.Fatalf("write with a stale version = %v, want ErrLost", err)
	}
	// Once a's lease lapsed, b's Renew (a machine that found the slot's
	// volume mounted) takes it over.
	hb, err := b.Renew(ctx, "main-1", "/dev/vdb", t0.Add(2*time.Minute))
	if err != nil || hb.Holder != "b" {
		t.Fatalf("renew after lapse = %+v, %v", hb, err)
	}
}

// TestLeasesRace: of many machines claiming slot 1 at once, exactly one
// wins.
func TestLeasesRace(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	var wg sync.WaitGroup
	wins := make(chan string, 8)
	for i := range 8 {
		l := Leases{Store: st, Layout: layout, Machine: string(rune('a' + i))}
		wg.Go(func() {
			if _, err := l.Write(ctx, "main-1", "", time.Time{}, t0, store.Condition{IfAbsent: true}); err == nil {
				wins <- l.Machine
			} else if !errors.Is(err, ErrLost) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	close(wins)
	var got []string
	for w := range wins {
		got = append(got, w)
	}
	if len(got) != 1 {
		t.Fatalf("winners %v, want exactly one", got)
	}
}

func TestReadRejectsMisplacedRecord(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	a := Leases{Store: st, Layout: layout, Machine: "a"}
	if _, err := a.Write(ctx, "main-1", "", time.Time{}, t0, store.Condition{}); err != nil {
		t.Fatal(err)
	}
	b, _, err := store.ReadAll(ctx, st, layout.SlotKey("main-1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, layout.SlotKey("main-2"), strings.NewReader(string(b)), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Read(ctx); err == nil || !strings.Contains(err.Error(), "main-2") {
		t.Fatalf("Read = %v, want an error naming the misplaced record", err)
	}
}

// fakeProvider is a cloud in memory: volumes with slots and attachments.
type fakeProvider struct {
	mu       sync.Mutex
	vols     []volumes.Volume
	created  []volumes.Selector
	detached []string
}

func (f *fakeProvider) List(context.Context, string, string) ([]volumes.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]volumes.Volume(nil), f.vols...), nil
}

func (f *fakeProvider) Create(_ context.Context, sel volumes.Selector, _ config.VolumeSpec) (volumes.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v := volumes.Volume{ID: "vol-" + sel.Slot, Slot: sel.Slot, Attachment: free}
	f.vols = append(f.vols, v)
	f.created = append(f.created, sel)
	return v, nil
}

func (f *fakeProvider) Attach(context.Context, volumes.Volume) (string, error) { return "", nil }

func (f *fakeProvider) Detach(_ context.Context, v volumes.Volume) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.detached = append(f.detached, v.ID)
	return nil
}

// TestAcquire carries decisions out against a store and a fake cloud:
// creation records the new volume in the lease, a volume attached to a
// stopped machine is detached before adoption, and two machines never
// get one slot.
func TestAcquire(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	prov := &fakeProvider{}
	now := t0
	acq := func(machine string) *Acquirer {
		return &Acquirer{Provider: prov, Leases: Leases{Store: st, Layout: layout, Machine: machine, Duration: time.Minute},
			Members: 3, CanCreate: true, Now: func() time.Time { return now }}
	}
	sel, v, err := acq("a").Acquire(ctx)
	if err != nil || sel.Slot != "main-1" || v.ID != "vol-main-1" {
		t.Fatalf("a: %+v %+v %v", sel, v, err)
	}
	recs, err := acq("x").Leases.Read(ctx)
	if err != nil || recs["main-1"].Volume != "vol-main-1" || recs["main-1"].Holder != "a" {
		t.Fatalf("lease after create: %+v %v", recs, err)
	}
	// a's volume is attached to a (running); b gets slot 2.
	prov.vols[0].Attachment = volumes.Attachment{State: volumes.AttachedElsewhere, Instance: "a", InstanceRunning: true}
	if sel, _, err := acq("b").Acquire(ctx); err != nil || sel.Slot != "main-2" {
		t.Fatalf("b: %+v %v", sel, err)
	}
	// a stops; its lease lapses; the replacement c adopts main-1 after
	// detaching it from the stopped a.
	prov.vols[0].Attachment.InstanceRunning = false
	now = t0.Add(2 * time.Minute)
	if _, err := acq("b").Leases.Renew(ctx, "main-2", "", now); err != nil { // b is alive
		t.Fatal(err)
	}
	sel, v, err = acq("c").Acquire(ctx)
	if err != nil || sel.Slot != "main-1" || v.ID != "vol-main-1" || len(prov.detached) != 1 {
		t.Fatalf("c: %+v %+v %v, detached %v", sel, v, err, prov.detached)
	}
	if len(prov.created) != 2 {
		t.Errorf("created %v, want main-1 and main-2 only", prov.created)
	}
}
