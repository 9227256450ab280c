package local_test

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/kopsnode/agents/pkg/testtools"
	"github.com/kopsnode/agents/volumes"
	"github.com/kopsnode/agents/volumes/format"
	"github.com/kopsnode/agents/volumes/internal/looptest"
	"github.com/kopsnode/agents/volumes/local"
)

func TestConfigValidateNamesFields(t *testing.T) {
	err := local.Config{Devices: map[string]string{"main": "sdb"}, Scan: []string{"/dev/[", "relative*"}}.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, f := range []string{"devices.main", "scan[0]", "scan[1]"} {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not name %s", err, f)
		}
	}
	if _, err := local.New(local.Config{Devices: map[string]string{"main": "/dev/disk/by-id/x"}}, nil); err != nil {
		t.Errorf("valid config refused: %v", err)
	}
}

func TestFind(t *testing.T) {
	testtools.RequireRoot(t)
	ctx := context.Background()
	sel := volumes.Selector{Cluster: "find.k8s.local", EtcdCluster: "main", Member: "etcd-a"}
	labelled, _ := looptest.Device(t, 16<<20)
	if err := format.Format(ctx, labelled, format.Options{Label: sel.Label()}); err != nil {
		t.Fatal(err)
	}
	blank, _ := looptest.Device(t, 16<<20)

	cases := []struct {
		name string
		cfg  local.Config
		sel  volumes.Selector
		want []volumes.Volume
	}{
		{"label found among scanned devices", local.Config{Devices: map[string]string{"main": blank}, Scan: []string{blank, labelled}}, sel,
			[]volumes.Volume{{ID: labelled, Device: labelled, Label: sel.Label()}}},
		{"label found scanning every block device", local.Config{}, sel,
			[]volumes.Volume{{ID: labelled, Device: labelled, Label: sel.Label()}}},
		{"no label: the configured device", local.Config{Devices: map[string]string{"main": blank}, Scan: []string{blank}}, sel,
			[]volumes.Volume{{ID: blank, Device: blank}}},
		{"no label, nothing configured for events", local.Config{Devices: map[string]string{"main": blank}, Scan: []string{blank, labelled}},
			volumes.Selector{Cluster: sel.Cluster, EtcdCluster: "events", Member: "etcd-a"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := local.New(tc.cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Find(ctx, tc.sel)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Find: %+v, want %+v", got, tc.want)
			}
			for _, v := range got {
				if dev, err := p.Attach(ctx, v); err != nil || dev != v.Device {
					t.Errorf("Attach(%+v): %q %v, want %s", v, dev, err, v.Device)
				}
			}
		})
	}
}
