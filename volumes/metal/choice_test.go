package metal

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestChosenDisks checks the serial and partition label lookups against a
// fake /sys and /dev: a loop device has neither a serial nor a GPT label.
func TestChosenDisks(t *testing.T) {
	root := t.TempDir()
	p := &Provider{sysRoot: filepath.Join(root, "sys"), devRoot: filepath.Join(root, "dev")}
	write := func(rel, content string) {
		f := filepath.Join(p.sysRoot, "class", "block", rel)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("vda/serial", "VIRTIO-ROOT\n")
	write("vdb/serial", "VIRTIO-ETCD  \n")        // virtio: <disk>/serial, padded
	write("nvme0n1/device/serial", "NVME-ETCD\n") // NVMe: <disk>/device/serial
	write("loop0/size", "0\n")

	cases := []struct {
		name string
		c    DiskChoice
		want []string
	}{
		{"device", DiskChoice{Device: "/dev/vdc"}, []string{"/dev/vdc"}},
		{"partition label", DiskChoice{PartitionLabel: "etcd-main"}, []string{filepath.Join(p.devRoot, "disk", "by-partlabel", "etcd-main")}},
		{"virtio serial", DiskChoice{Serials: []string{"VIRTIO-ETCD", "other"}}, []string{filepath.Join(p.devRoot, "vdb")}},
		{"nvme serial", DiskChoice{Serials: []string{"NVME-ETCD"}}, []string{filepath.Join(p.devRoot, "nvme0n1")}},
		{"two serials present", DiskChoice{Serials: []string{"NVME-ETCD", "VIRTIO-ETCD"}}, []string{filepath.Join(p.devRoot, "nvme0n1"), filepath.Join(p.devRoot, "vdb")}},
		{"serial absent", DiskChoice{Serials: []string{"NOPE"}}, nil},
		{"nothing chosen", DiskChoice{}, nil},
	}
	for _, tc := range cases {
		got, err := p.chosen(tc.c)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: chosen = %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := (DiskChoice{Serials: []string{"A", "B"}}).String(); got != "serials A, B" {
		t.Errorf("String = %q", got)
	}
}
