package metal_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/testtools"
	"github.com/kopsnode/agents/volumes"
	"github.com/kopsnode/agents/volumes/format"
	"github.com/kopsnode/agents/volumes/internal/looptest"
	"github.com/kopsnode/agents/volumes/metal"
)

func TestConfigValidateNamesFields(t *testing.T) {
	err := metal.Config{Disks: map[string]metal.DiskChoice{"main": {Device: "sdb"}, "events": {PartitionLabel: "a/b"}}, Scan: []string{"/dev/[", "relative*"}}.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, f := range []string{"disks.main.device", "disks.events.partitionLabel", "scan[0]", "scan[1]"} {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not name %s", err, f)
		}
	}
	if _, err := metal.New(metal.Config{Disks: map[string]metal.DiskChoice{"main": {Device: "/dev/disk/by-id/x"}}}, nil); err != nil {
		t.Errorf("valid config refused: %v", err)
	}
}

func TestConfigFromNode(t *testing.T) {
	spec := config.NodeConfigSpec{
		Volume: &config.VolumeProviderSpec{Provider: "metal", Metal: &config.MetalVolumeSpec{Scan: []string{"/dev/vd*"}}},
		EtcdClusters: []config.EtcdClusterSpec{
			{Name: "main", Volume: config.VolumeSpec{SizeGiB: 20, Device: "/dev/vdb"}},
			{Name: "events", Volume: config.VolumeSpec{Serials: []string{"S1", "S2"}}},
			{Name: "other", Volume: config.VolumeSpec{SizeGiB: 20}},
		},
	}
	got := metal.ConfigFromNode(spec)
	want := metal.Config{Scan: []string{"/dev/vd*"}, Disks: map[string]metal.DiskChoice{
		"main": {Device: "/dev/vdb"}, "events": {Serials: []string{"S1", "S2"}},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ConfigFromNode = %+v, want %+v", got, want)
	}
}

func TestCreateAndDetachAreNotSupported(t *testing.T) {
	p, err := metal.New(metal.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Create(context.Background(), volumes.Selector{Cluster: "c", EtcdCluster: "main", Slot: "main-1"}, config.VolumeSpec{}); !errors.Is(err, volumes.ErrNotSupported) {
		t.Errorf("Create = %v, want ErrNotSupported", err)
	}
	if err := p.Detach(context.Background(), volumes.Volume{ID: "/dev/x", Device: "/dev/x"}); !errors.Is(err, volumes.ErrNotSupported) {
		t.Errorf("Detach = %v, want ErrNotSupported", err)
	}
}

// formatFor formats dev as the volume of sel, identity file included, as
// volumes.Ensure does.
func formatFor(t *testing.T, dev string, sel volumes.Selector) {
	t.Helper()
	err := format.Format(context.Background(), dev, format.Options{
		Label: sel.Label(),
		Files: map[string][]byte{volumes.IdentityFileName: volumes.NewIdentity(sel, "", dev).Marshal()},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestList: the devices formatted for a slot of the etcd cluster are found
// by their identity file, wherever they are (a disk renamed or moved to
// another machine); volumes of other etcd clusters or clusters are left
// out; the disk the configuration chooses is listed without a slot unless
// it is one of them.
func TestList(t *testing.T) {
	testtools.RequireRoot(t)
	ctx := context.Background()
	const cluster = "list.k8s.local"
	main2, _ := looptest.Device(t, 16<<20)
	formatFor(t, main2, volumes.Selector{Cluster: cluster, EtcdCluster: "main", Slot: "main-2"})
	events1, _ := looptest.Device(t, 16<<20)
	formatFor(t, events1, volumes.Selector{Cluster: cluster, EtcdCluster: "events", Slot: "events-1"})
	otherCluster, _ := looptest.Device(t, 16<<20)
	formatFor(t, otherCluster, volumes.Selector{Cluster: "other.k8s.local", EtcdCluster: "main", Slot: "main-1"})
	blank, _ := looptest.Device(t, 16<<20)
	all := []string{main2, events1, otherCluster, blank}
	here := volumes.Attachment{State: volumes.AttachedHere}
	slotted := volumes.Volume{ID: main2, Device: main2, Label: volumes.Selector{Cluster: cluster, EtcdCluster: "main", Slot: "main-2"}.Label(), Slot: "main-2", Attachment: here}

	cases := []struct {
		name string
		cfg  metal.Config
		want []volumes.Volume
	}{
		{"slotted volume and the chosen blank disk", metal.Config{Disks: map[string]metal.DiskChoice{"main": {Device: blank}}, Scan: all},
			[]volumes.Volume{slotted, {ID: blank, Device: blank, Attachment: here}}},
		{"scanning every block device", metal.Config{}, []volumes.Volume{slotted}},
		{"the chosen disk is the slotted volume: listed once", metal.Config{Disks: map[string]metal.DiskChoice{"main": {Device: main2}}, Scan: all},
			[]volumes.Volume{slotted}},
		{"a chosen disk not yet present is listed (Ensure waits for it)", metal.Config{Disks: map[string]metal.DiskChoice{"main": {Device: "/dev/disk/by-id/not-yet"}}, Scan: []string{blank}},
			[]volumes.Volume{{ID: "/dev/disk/by-id/not-yet", Device: "/dev/disk/by-id/not-yet", Attachment: here}}},
		{"the chosen disk outside the scan carries a slot: listed with it", metal.Config{Disks: map[string]metal.DiskChoice{"main": {Device: main2}}, Scan: []string{blank}},
			[]volumes.Volume{slotted}},
		{"nothing", metal.Config{Scan: []string{blank, otherCluster, events1}}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := metal.New(tc.cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.List(ctx, cluster, "main")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("List:\n%+v\nwant\n%+v", got, tc.want)
			}
			for _, v := range got {
				if dev, err := p.Attach(ctx, v); err != nil || dev != v.Device {
					t.Errorf("Attach(%+v): %q %v, want %s", v, dev, err, v.Device)
				}
			}
		})
	}
}
