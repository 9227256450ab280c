package mount_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/pkg/testtools"
	"github.com/kopsnode/agents/volumes/internal/looptest"
	"github.com/kopsnode/agents/volumes/mount"
)

func TestParseMountInfo(t *testing.T) {
	in := `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 22 7:3 / /mnt/etcd\040main rw,noatime master:2 - ext4 /dev/loop3 rw
36 22 0:5 / /proc rw - proc proc rw
`
	got, err := mount.ParseMountInfo(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []mount.Info{
		{Major: 8, Minor: 1, MountPoint: "/", FSType: "ext4", Source: "/dev/sda1"},
		{Major: 7, Minor: 3, MountPoint: "/mnt/etcd main", FSType: "ext4", Source: "/dev/loop3"},
		{Major: 0, Minor: 5, MountPoint: "/proc", FSType: "proc", Source: "proc"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	for _, bad := range []string{"garbage\n", "1 2 x:y / / rw - ext4 /dev/a rw\n", "1 2 8:1 / / rw\n"} {
		if _, err := mount.ParseMountInfo(strings.NewReader(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func ext4Device(t *testing.T) string {
	t.Helper()
	dev, _ := looptest.Device(t, 16<<20)
	looptest.Run(t, "mkfs.ext4", "-q", dev)
	return dev
}

func TestMountIsIdempotentAndRefusesAnotherDevice(t *testing.T) {
	testtools.RequireRoot(t)
	ctx := context.Background()
	devA, devB := ext4Device(t), ext4Device(t)
	target := filepath.Join(t.TempDir(), "etcd", "main")
	looptest.UnmountOnCleanup(t, target)

	if err := mount.Fsck(ctx, nil, devA); err != nil {
		t.Fatal(err)
	}
	already, err := mount.Mount(ctx, nil, devA, target, "ext4")
	if err != nil || already {
		t.Fatalf("first Mount: already=%v %v", already, err)
	}
	already, err = mount.Mount(ctx, nil, devA, target, "ext4")
	if err != nil || !already {
		t.Fatalf("second Mount: already=%v %v, want already mounted", already, err)
	}
	_, err = mount.Mount(ctx, nil, devB, target, "ext4")
	if !errors.Is(err, mount.ErrTargetBusy) || !strings.Contains(err.Error(), devA) || !strings.Contains(err.Error(), devB) {
		t.Fatalf("Mount of %s over %s: %v, want ErrTargetBusy naming both", devB, devA, err)
	}
	other := filepath.Join(t.TempDir(), "other")
	looptest.UnmountOnCleanup(t, other)
	if _, err := mount.Mount(ctx, nil, devA, other, "ext4"); !errors.Is(err, mount.ErrMountedElsewhere) || !strings.Contains(err.Error(), target) {
		t.Fatalf("Mount of %s at a second place: %v, want ErrMountedElsewhere naming %s", devA, err, target)
	}
	if err := mount.Unmount(target); err != nil {
		t.Fatal(err)
	}
	if looptest.Mounted(t, target) {
		t.Fatal("still mounted after Unmount")
	}
	if err := mount.Unmount(target); err != nil {
		t.Fatalf("Unmount of an unmounted target: %v", err)
	}
}

func TestMountRefusesNonEmptyTarget(t *testing.T) {
	testtools.RequireRoot(t)
	dev := ext4Device(t)
	target := t.TempDir()
	looptest.UnmountOnCleanup(t, target)
	if err := os.WriteFile(filepath.Join(target, "member"), []byte("etcd data on the root disk"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := mount.Mount(context.Background(), nil, dev, target, "ext4")
	if !errors.Is(err, mount.ErrTargetNotEmpty) || !strings.Contains(err.Error(), "member") {
		t.Fatalf("Mount over a non-empty directory: %v, want ErrTargetNotEmpty naming the entry", err)
	}
	if looptest.Mounted(t, target) {
		t.Fatal("mounted anyway")
	}
}

func TestFsckRefusesNonExt(t *testing.T) {
	testtools.RequireRoot(t)
	dev, _ := looptest.Device(t, 16<<20)
	looptest.Run(t, "mkswap", dev)
	if err := mount.Fsck(context.Background(), nil, dev); err == nil || !strings.Contains(err.Error(), dev) {
		t.Fatalf("Fsck of swap: %v, want an error naming %s", err, dev)
	}
}

func TestWaitForDevice(t *testing.T) {
	testtools.RequireRoot(t)
	img := looptest.Image(t, 16<<20)
	link := filepath.Join(t.TempDir(), "disk")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type result struct {
		dev string
		err error
	}
	done := make(chan result, 1)
	go func() {
		d, err := mount.WaitForDevice(ctx, nil, link, 5*time.Millisecond)
		done <- result{d, err}
	}()
	dev := looptest.Attach(t, img)
	if err := os.Symlink(dev, link); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.err != nil || r.dev != dev {
		t.Fatalf("WaitForDevice: %q %v, want %s", r.dev, r.err, dev)
	}

	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	missing := filepath.Join(t.TempDir(), "missing")
	if _, err := mount.WaitForDevice(cctx, nil, missing, time.Millisecond); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), missing) {
		t.Fatalf("WaitForDevice with a cancelled context: %v", err)
	}
	// A regular file never becomes a device: only the deadline ends the wait.
	tctx, tcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer tcancel()
	if _, err := mount.WaitForDevice(tctx, nil, img, time.Millisecond); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not a block device") {
		t.Fatalf("WaitForDevice on a regular file: %v, want DeadlineExceeded saying why", err)
	}
}
