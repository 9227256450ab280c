// Package slots gives each machine exactly one member slot per etcd cluster
// and the volume that goes with it. An etcd cluster of N members has slots
// <name>-1 .. <name>-N (volumes.SlotName); a slot is held through a lease
// record in the state store (control.Layout.SlotKey), written
// create-if-absent or compare-and-swap, and renewed by its holder on every
// pass of protokube etcd-volumes. A machine adopts the slot of the volume
// attached to it (a disk moved from a dead machine, or a cloud volume its
// old instance no longer holds) once no other machine's lease on that slot
// is current; otherwise it claims a free slot and makes the volume. Two
// machines never hold one slot: the store write decides every race, and a
// slot held by a current lease is never taken.
//
// Decide is the pure decision; Acquirer reads the provider and the store,
// decides and carries the decision out.
package slots

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/volumes"
)

// Record kinds.
const (
	APIVersion = "volumes.kopsnode.io/v1"
	Kind       = "SlotLease"
)

// DefaultLease is how long a lease lasts without renewal.
const DefaultLease = 5 * time.Minute

// Record is a slot's lease in the store.
type Record struct {
	APIVersion  string `json:"apiVersion"`
	Kind        string `json:"kind"`
	Cluster     string `json:"cluster"`
	EtcdCluster string `json:"etcdCluster"`
	Slot        string `json:"slot"`
	// Holder is the machine holding the slot (its host name).
	Holder string `json:"holder"`
	// Volume is the provider's ID of the slot's volume, once known.
	Volume string `json:"volume,omitempty"`
	// HeldUntil is when the lease lapses unless renewed.
	HeldUntil time.Time `json:"heldUntil"`
	// Since is when the holder took the slot.
	Since time.Time `json:"since"`
}

// Held is a record as read, with the version to compare-and-swap against.
type Held struct {
	Record
	Version store.Version
}

// Errors callers test with errors.Is.
var (
	// ErrHeld: the slot (or every slot) is held by another machine's
	// current lease.
	ErrHeld = errors.New("slot held by another machine")
	// ErrNoDisk: no disk is chosen for a new member's volume and the
	// provider cannot create one.
	ErrNoDisk = errors.New("no volume for a new member")
	// ErrLost: another machine wrote the slot's record first.
	ErrLost = errors.New("another machine took the slot first")
	// errUnreachable: the slot's volume can never be attached here (another
	// zone); the slot counts as taken and this machine looks for another.
	errUnreachable = errors.New("volume out of this machine's reach")
)

// Action is what Decide says to do.
type Action string

// Actions.
const (
	// UseVolume: mount the volume attached here, which carries Slot.
	UseVolume Action = "use"
	// AdoptVolume: take Slot and attach its volume, which no running
	// machine holds (detaching it first from a stopped one).
	AdoptVolume Action = "adopt"
	// NewVolume: take Slot and make its volume: on the chosen blank disk
	// (Volume set) or by creating one (Volume nil).
	NewVolume Action = "new"
	// Wait: nothing can be done now; Err says why.
	Wait Action = "wait"
)

// Input is what Decide looks at.
type Input struct {
	// Machine is this machine's name, the Holder of its records.
	Machine string
	// Slots are the etcd cluster's slots (volumes.SlotNames).
	Slots []string
	// Volumes are the provider's List.
	Volumes []volumes.Volume
	// Records are the slots' records by slot.
	Records map[string]Held
	Now     time.Time
	// CanCreate: the provider creates volumes (not metal).
	CanCreate bool
}

// Decision is what to do, and the store condition under which to write the
// slot's record (create-if-absent, or compare-and-swap on the version read).
type Decision struct {
	Action Action
	Slot   string
	Volume *volumes.Volume
	Cond   store.Condition
	// Err explains a Wait.
	Err error
}

// takeable tells whether this machine may write slot's record: none, its
// own, or a lapsed lease; with the condition to write it under.
func (in Input) takeable(slot string) (store.Condition, bool) {
	r, ok := in.Records[slot]
	switch {
	case !ok:
		return store.Condition{IfAbsent: true}, true
	case r.Holder == in.Machine || !in.Now.Before(r.HeldUntil):
		return store.Condition{IfVersion: r.Version}, true
	}
	return store.Condition{}, false
}

func (in Input) heldBy(slot string) string {
	r := in.Records[slot]
	return fmt.Sprintf("machine %s until %s", r.Holder, r.HeldUntil.UTC().Format(time.RFC3339))
}

// Decide chooses this machine's slot and volume, in this order:
//  1. a volume attached here that carries a slot: use it, unless another
//     machine's lease on the slot is current (then it is left alone);
//  2. a slot whose record this machine holds: go on with it;
//  3. a volume carrying a slot that no running machine holds and no
//     current lease covers: adopt it (a replacement machine);
//  4. a slot no volume carries and no current lease covers: take it for a
//     new volume, on the disk chosen here or created;
//  5. otherwise wait, saying who holds what.
//
// Two volumes carrying one slot are never chosen between.
func Decide(in Input) Decision {
	bySlot := map[string][]volumes.Volume{}
	var here, blank []volumes.Volume
	for _, v := range in.Volumes {
		if v.Slot != "" {
			bySlot[v.Slot] = append(bySlot[v.Slot], v)
			if v.Attachment.State == volumes.AttachedHere {
				here = append(here, v)
			}
		} else if v.Attachment.State == volumes.AttachedHere {
			blank = append(blank, v)
		}
	}
	dup := func(slot string) error {
		vs := bySlot[slot]
		if len(vs) < 2 {
			return nil
		}
		ids := make([]string, len(vs))
		for i, v := range vs {
			ids[i] = v.ID
		}
		return fmt.Errorf("volumes %s all carry slot %s; refusing to choose: %w", strings.Join(ids, ", "), slot, volumes.ErrAmbiguous)
	}

	// 1. A volume attached here, unless another machine's current lease
	// holds its slot (a cloned disk, or storage several machines see).
	var usable []volumes.Volume
	var heldHere []string
	for _, v := range here {
		if _, ok := in.takeable(v.Slot); ok {
			usable = append(usable, v)
		} else {
			heldHere = append(heldHere, fmt.Sprintf("volume %s of slot %s is attached to this machine, but the slot is held by %s (it is used once that lease lapses)", v.ID, v.Slot, in.heldBy(v.Slot)))
		}
	}
	switch len(usable) {
	case 0:
	case 1:
		v := usable[0]
		if err := dup(v.Slot); err != nil {
			return Decision{Action: Wait, Slot: v.Slot, Err: err}
		}
		cond, _ := in.takeable(v.Slot)
		return Decision{Action: UseVolume, Slot: v.Slot, Volume: &v, Cond: cond}
	default:
		var names []string
		for _, v := range usable {
			names = append(names, v.ID+" (slot "+v.Slot+")")
		}
		return Decision{Action: Wait, Err: fmt.Errorf("volumes %s are all attached to this machine; a machine holds one slot per etcd cluster, so none is used: %w", strings.Join(names, ", "), volumes.ErrAmbiguous)}
	}

	adoptable := func(slot string) (*volumes.Volume, error) {
		if err := dup(slot); err != nil {
			return nil, err
		}
		vs := bySlot[slot]
		if len(vs) == 0 {
			return nil, nil
		}
		v := vs[0]
		if v.Unreachable != "" {
			return nil, fmt.Errorf("volume %s of slot %s cannot be attached to this machine (%s): %w", v.ID, slot, v.Unreachable, errUnreachable)
		}
		if v.Attachment.State == volumes.AttachedElsewhere && v.Attachment.InstanceRunning {
			return nil, fmt.Errorf("volume %s of slot %s is attached to %s, which is running: %w", v.ID, slot, v.Attachment.Instance, ErrHeld)
		}
		return &v, nil
	}
	newVolume := func(slot string, cond store.Condition) Decision {
		switch {
		case len(blank) > 1:
			ids := make([]string, len(blank))
			for i, v := range blank {
				ids[i] = v.ID
			}
			return Decision{Action: Wait, Err: fmt.Errorf("disks %s are all chosen for a new member; refusing to choose: %w", strings.Join(ids, ", "), volumes.ErrAmbiguous)}
		case len(blank) == 1:
			v := blank[0]
			return Decision{Action: NewVolume, Slot: slot, Volume: &v, Cond: cond}
		case in.CanCreate:
			return Decision{Action: NewVolume, Slot: slot, Cond: cond}
		case len(heldHere) > 0:
			return Decision{Action: Wait, Err: fmt.Errorf("%s, and no other disk is chosen for a new member: %w", strings.Join(heldHere, "; "), ErrHeld)}
		}
		return Decision{Action: Wait, Err: ErrNoDisk}
	}

	// 2. A slot this machine's record holds (it claimed it on an earlier
	// pass and has not made the volume yet, or the volume is elsewhere).
	for _, slot := range sortedSlots(in) {
		r, ok := in.Records[slot]
		if !ok || r.Holder != in.Machine {
			continue
		}
		cond := store.Condition{IfVersion: r.Version}
		v, err := adoptable(slot)
		switch {
		case errors.Is(err, errUnreachable):
			// A record from before the volume was known to be out of
			// reach: let it lapse so a machine that can attach it does.
			continue
		case err != nil:
			return Decision{Action: Wait, Slot: slot, Err: err}
		case v != nil:
			return Decision{Action: AdoptVolume, Slot: slot, Volume: v, Cond: cond}
		}
		if d := newVolume(slot, cond); d.Action != Wait || len(blank) > 1 {
			return d
		}
		// Nothing to make its volume on: let the record lapse.
	}

	// 3. Adopt a volume no running machine holds.
	waits := heldHere
	for _, slot := range sortedSlots(in) {
		if len(bySlot[slot]) == 0 {
			continue
		}
		v, err := adoptable(slot)
		if err != nil {
			waits = append(waits, err.Error())
			continue
		}
		cond, ok := in.takeable(slot)
		if !ok {
			waits = append(waits, fmt.Sprintf("volume %s of slot %s is held by %s", v.ID, slot, in.heldBy(slot)))
			continue
		}
		return Decision{Action: AdoptVolume, Slot: slot, Volume: v, Cond: cond}
	}

	// 4. A slot without a volume: never claimed, or its volume is gone
	// with a machine whose lease lapsed.
	for _, slot := range in.Slots {
		if len(bySlot[slot]) > 0 {
			continue
		}
		cond, ok := in.takeable(slot)
		if !ok {
			waits = append(waits, fmt.Sprintf("slot %s is held by %s", slot, in.heldBy(slot)))
			continue
		}
		return newVolume(slot, cond)
	}

	// 5. Wait.
	return Decision{Action: Wait, Err: fmt.Errorf("every slot (%s) is held: %s: %w", strings.Join(in.Slots, ", "), strings.Join(waits, "; "), ErrHeld)}
}

// sortedSlots are the configured slots and those of the records and
// volumes, in order.
func sortedSlots(in Input) []string {
	set := map[string]bool{}
	for _, s := range in.Slots {
		set[s] = true
	}
	for s := range in.Records {
		set[s] = true
	}
	for _, v := range in.Volumes {
		if v.Slot != "" {
			set[v.Slot] = true
		}
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// Leases reads and writes the slot records of one etcd cluster.
type Leases struct {
	Store  store.Store
	Layout control.Layout
	// Machine is the Holder written.
	Machine string
	// Duration is how long a written lease lasts (default DefaultLease).
	Duration time.Duration
}

// Read returns every slot record of the etcd cluster by slot.
func (l Leases) Read(ctx context.Context) (map[string]Held, error) {
	infos, err := l.Store.List(ctx, l.Layout.SlotsPrefix())
	if err != nil {
		return nil, fmt.Errorf("listing slot leases: %w", err)
	}
	out := map[string]Held{}
	for _, i := range infos {
		b, info, err := store.ReadAll(ctx, l.Store, i.Key)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading slot lease: %w", err)
		}
		var r Record
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		where := store.JoinURL(l.Store.URL(), i.Key)
		if err := dec.Decode(&r); err != nil {
			return nil, fmt.Errorf("decoding slot lease %s: %w", where, err)
		}
		if r.APIVersion != APIVersion || r.Kind != Kind || l.Layout.SlotKey(r.Slot) != i.Key {
			return nil, fmt.Errorf("slot lease %s: apiVersion %q kind %q slot %q do not match its key", where, r.APIVersion, r.Kind, r.Slot)
		}
		out[r.Slot] = Held{Record: r, Version: info.Version}
	}
	return out, nil
}

// Write writes this machine's lease on slot under cond, lasting Duration
// from now. since is kept from an earlier lease of the same holder. A lost
// condition returns an error wrapping ErrLost.
func (l Leases) Write(ctx context.Context, slot, volumeID string, since, now time.Time, cond store.Condition) (Held, error) {
	d := l.Duration
	if d <= 0 {
		d = DefaultLease
	}
	if since.IsZero() {
		since = now
	}
	r := Record{APIVersion: APIVersion, Kind: Kind, Cluster: l.Layout.Cluster, EtcdCluster: l.Layout.EtcdCluster,
		Slot: slot, Holder: l.Machine, Volume: volumeID, HeldUntil: now.Add(d).UTC(), Since: since.UTC()}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return Held{}, err
	}
	key := l.Layout.SlotKey(slot)
	info, err := l.Store.Put(ctx, key, bytes.NewReader(append(b, '\n')), cond)
	if errors.Is(err, store.ErrPrecondition) {
		return Held{}, fmt.Errorf("writing slot lease %s: %w", store.JoinURL(l.Store.URL(), key), ErrLost)
	}
	if err != nil {
		return Held{}, fmt.Errorf("writing slot lease: %w", err)
	}
	return Held{Record: r, Version: info.Version}, nil
}

// Renew extends this machine's lease on slot. It fails, wrapping ErrLost,
// when another machine holds the slot now (this machine's lease lapsed and
// was taken): the caller reports it and leaves its mounted volume alone.
func (l Leases) Renew(ctx context.Context, slot, volumeID string, now time.Time) (Held, error) {
	recs, err := l.Read(ctx)
	if err != nil {
		return Held{}, err
	}
	r, ok := recs[slot]
	switch {
	case !ok:
		return l.Write(ctx, slot, volumeID, now, now, store.Condition{IfAbsent: true})
	case r.Holder != l.Machine:
		if now.Before(r.HeldUntil) {
			return Held{}, fmt.Errorf("slot %s, whose volume is mounted here, is held by machine %s until %s: %w", slot, r.Holder, r.HeldUntil.UTC().Format(time.RFC3339), ErrLost)
		}
		return l.Write(ctx, slot, volumeID, now, now, store.Condition{IfVersion: r.Version})
	}
	if volumeID == "" {
		volumeID = r.Volume
	}
	return l.Write(ctx, slot, volumeID, r.Since, now, store.Condition{IfVersion: r.Version})
}

// Acquirer carries out Decide for one etcd cluster on this machine.
type Acquirer struct {
	Provider volumes.Provider
	Leases   Leases
	// Members is the etcd cluster's member count (its slots).
	Members int
	// Spec sizes created volumes.
	Spec config.VolumeSpec
	// CanCreate: the provider creates volumes.
	CanCreate bool
	Now       func() time.Time
	Log       *slog.Logger
}

// Acquire returns the slot this machine holds for the etcd cluster and the
// volume to mount for it, holding the slot's lease. Errors wrap ErrHeld,
// ErrNoDisk, ErrLost or volumes.ErrAmbiguous when the machine must wait.
func (a *Acquirer) Acquire(ctx context.Context) (volumes.Selector, volumes.Volume, error) {
	l := a.Leases.Layout
	log := a.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := a.Now
	if now == nil {
		now = time.Now
	}
	vols, err := a.Provider.List(ctx, l.Cluster, l.EtcdCluster)
	if err != nil {
		return volumes.Selector{}, volumes.Volume{}, fmt.Errorf("listing the volumes of etcd cluster %s: %w", l.EtcdCluster, err)
	}
	recs, err := a.Leases.Read(ctx)
	if err != nil {
		return volumes.Selector{}, volumes.Volume{}, err
	}
	in := Input{Machine: a.Leases.Machine, Slots: volumes.SlotNames(l.EtcdCluster, a.Members), Volumes: vols, Records: recs, Now: now(), CanCreate: a.CanCreate}
	d := Decide(in)
	if d.Action == Wait {
		return volumes.Selector{}, volumes.Volume{}, d.Err
	}
	sel := volumes.Selector{Cluster: l.Cluster, EtcdCluster: l.EtcdCluster, Slot: d.Slot}
	var vid string
	if d.Volume != nil {
		vid = d.Volume.ID
	}
	since := time.Time{}
	if r, ok := recs[d.Slot]; ok && r.Holder == a.Leases.Machine {
		since = r.Since
	}
	held, err := a.Leases.Write(ctx, d.Slot, vid, since, in.Now, d.Cond)
	if err != nil {
		return volumes.Selector{}, volumes.Volume{}, err
	}
	log.Info("holding slot", "slot", d.Slot, "action", d.Action, "volume", vid, "heldUntil", held.HeldUntil)
	switch {
	case d.Action == AdoptVolume && d.Volume.Attachment.State == volumes.AttachedElsewhere:
		log.Info("detaching the slot's volume from a machine that is not running", "volume", vid, "instance", d.Volume.Attachment.Instance)
		if err := a.Provider.Detach(ctx, *d.Volume); err != nil {
			return volumes.Selector{}, volumes.Volume{}, fmt.Errorf("detaching volume %s of slot %s from %s: %w", vid, d.Slot, d.Volume.Attachment.Instance, err)
		}
	case d.Action == NewVolume && d.Volume == nil:
		v, err := a.Provider.Create(ctx, sel, a.Spec)
		if err != nil {
			return volumes.Selector{}, volumes.Volume{}, fmt.Errorf("creating the volume of slot %s: %w", d.Slot, err)
		}
		log.Info("created volume", "slot", d.Slot, "volume", v.ID)
		if _, err := a.Leases.Write(ctx, d.Slot, v.ID, held.Since, now(), store.Condition{IfVersion: held.Version}); err != nil {
			return volumes.Selector{}, volumes.Volume{}, err
		}
		return sel, v, nil
	}
	return sel, *d.Volume, nil
}
