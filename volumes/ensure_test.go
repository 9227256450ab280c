package volumes_test

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kopsnode/agents/pkg/testtools"
	"github.com/kopsnode/agents/volumes"
	"github.com/kopsnode/agents/volumes/format"
	"github.com/kopsnode/agents/volumes/internal/looptest"
	"github.com/kopsnode/agents/volumes/metal"
	"github.com/kopsnode/agents/volumes/mount"
)

const diskSize = 32 << 20

// env is one test's member, device and mount target.
type env struct {
	sel    volumes.Selector
	target string
	opts   volumes.Options
}

func newEnv(t *testing.T, slot string) *env {
	t.Helper()
	testtools.RequireRoot(t)
	e := &env{
		sel:    volumes.Selector{Cluster: "c-" + sanitize(t.Name()) + ".k8s.local", EtcdCluster: "main", Slot: slot},
		target: filepath.Join(t.TempDir(), "mnt", "etcd", "main"),
		opts:   volumes.Options{Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)), PollInterval: 10 * time.Millisecond, DeviceTimeout: time.Minute},
	}
	looptest.UnmountOnCleanup(t, e.target)
	return e
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, s)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func provider(t *testing.T) *metal.Provider {
	t.Helper()
	p, err := metal.New(metal.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// disk is the metal volume of a device: attached here, slot not known.
func disk(dev string) volumes.Volume {
	return volumes.Volume{ID: dev, Device: dev, Attachment: volumes.Attachment{State: volumes.AttachedHere}}
}

func ensure(t *testing.T, e *env, dev string) *volumes.Result {
	t.Helper()
	res, err := volumes.Ensure(context.Background(), provider(t), e.sel, disk(dev), e.target, e.opts)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	return res
}

func TestEnsureFormatsBlankDeviceAndMounts(t *testing.T) {
	e := newEnv(t, "main-1")
	dev, _ := looptest.Device(t, diskSize)
	res := ensure(t, e, dev)
	if !res.Formatted || res.AlreadyMounted || res.Device != dev {
		t.Fatalf("result %+v, want formatted %s", res, dev)
	}
	st, err := mount.Check(dev, e.target)
	if err != nil || !st.AtTarget {
		t.Fatalf("%s not mounted at %s: %+v %v", dev, e.target, st, err)
	}
	b, err := os.ReadFile(filepath.Join(e.target, volumes.IdentityFileName))
	if err != nil {
		t.Fatal(err)
	}
	id, err := volumes.ParseIdentity("mounted", b)
	if err != nil {
		t.Fatal(err)
	}
	if id.Selector != e.sel || id.Device != dev {
		t.Errorf("identity %+v, want %+v on %s", id, e.sel, dev)
	}
	tags, err := format.Probe(context.Background(), dev)
	if err != nil {
		t.Fatal(err)
	}
	if tags["TYPE"] != "ext4" || tags["LABEL"] != e.sel.Label() {
		t.Errorf("blkid tags %v, want ext4 labelled %s", tags, e.sel.Label())
	}
}

func TestEnsureRerunIsNoOp(t *testing.T) {
	e := newEnv(t, "main-1")
	dev, _ := looptest.Device(t, diskSize)
	ensure(t, e, dev)
	data := filepath.Join(e.target, "member", "data")
	if err := os.MkdirAll(filepath.Dir(data), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(data, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}

	res := ensure(t, e, dev)
	if res.Formatted || !res.AlreadyMounted {
		t.Fatalf("second Ensure while mounted: %+v, want already mounted, not formatted", res)
	}

	// After an unmount (a reboot), Ensure mounts the same filesystem again.
	if err := mount.Unmount(e.target); err != nil {
		t.Fatal(err)
	}
	res = ensure(t, e, dev)
	if res.Formatted || res.AlreadyMounted {
		t.Fatalf("Ensure after unmount: %+v, want mounted now without formatting", res)
	}
	if b, err := os.ReadFile(data); err != nil || string(b) != "keep me" {
		t.Fatalf("file written before re-running Ensure: %q, %v", b, err)
	}
}

func TestEnsureRefusesForeignDevices(t *testing.T) {
	cases := []struct {
		name    string
		prepare func(t *testing.T, img string) // writes into the image before it is attached
		after   func(t *testing.T, dev string) // runs on the attached device
		want    string                         // in the error
	}{
		{name: "ext4 without identity", after: func(t *testing.T, dev string) {
			looptest.Run(t, "mkfs.ext4", "-q", "-L", "someone-else", dev)
		}, want: "ext4 filesystem (LABEL=someone-else"},
		{name: "ext4 with our label but no identity", after: func(t *testing.T, dev string) {
			looptest.Run(t, "mkfs.ext4", "-q", "-L", volumes.Selector{Cluster: "c-" + sanitize(t.Name()) + ".k8s.local", EtcdCluster: "main", Slot: "main-1"}.Label(), dev)
		}, want: "without " + volumes.IdentityFileName},
		{name: "swap", after: func(t *testing.T, dev string) { looptest.Run(t, "mkswap", dev) }, want: "swap"},
		{name: "dos partition table", prepare: func(t *testing.T, img string) {
			mbr := make([]byte, 512)
			copy(mbr[446:], []byte{0x00, 0x20, 0x21, 0x00, 0x83, 0, 0, 0, 0x00, 0x08, 0, 0, 0x00, 0xf8, 0, 0})
			mbr[510], mbr[511] = 0x55, 0xaa
			writeAt(t, img, mbr, 0)
		}, want: "dos partition table"},
		{name: "data in the first MiB", prepare: func(t *testing.T, img string) {
			writeAt(t, img, random(t, 1<<20), 0)
		}, want: "non-zero data at byte"},
		{name: "data in the last MiB only", prepare: func(t *testing.T, img string) {
			writeAt(t, img, random(t, 4096), diskSize-8192)
		}, want: "non-zero data at byte"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "main-1")
			img := looptest.Image(t, diskSize)
			if tc.prepare != nil {
				tc.prepare(t, img)
			}
			dev := looptest.Attach(t, img)
			if tc.after != nil {
				tc.after(t, dev)
			}
			head, tail := looptest.Sum(t, dev, 0, 1<<20), looptest.Sum(t, dev, -(1<<20), 1<<20)

			_, err := volumes.Ensure(context.Background(), provider(t), e.sel, disk(dev), e.target, e.opts)
			if !errors.Is(err, format.ErrNotBlank) {
				t.Fatalf("Ensure on %s: %v, want ErrNotBlank", tc.name, err)
			}
			t.Logf("refused: %v", err)
			if !strings.Contains(err.Error(), dev) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %s and %q", err, dev, tc.want)
			}
			if looptest.Mounted(t, e.target) {
				t.Errorf("%s was mounted at %s", dev, e.target)
			}
			if h, tl := looptest.Sum(t, dev, 0, 1<<20), looptest.Sum(t, dev, -(1<<20), 1<<20); h != head || tl != tail {
				t.Errorf("%s was changed: first MiB %s -> %s, last MiB %s -> %s", dev, head, h, tail, tl)
			}
		})
	}
}

func TestEnsureRefusesVolumeOfAnotherSlot(t *testing.T) {
	e := newEnv(t, "main-1")
	dev, _ := looptest.Device(t, diskSize)
	ensure(t, e, dev)
	if err := mount.Unmount(e.target); err != nil {
		t.Fatal(err)
	}
	head := looptest.Sum(t, dev, 0, 1<<20)

	others := map[string]volumes.Selector{
		"other slot":         {Cluster: e.sel.Cluster, EtcdCluster: "main", Slot: "main-2"},
		"other cluster":      {Cluster: "another.k8s.local", EtcdCluster: "main", Slot: "main-1"},
		"other etcd cluster": {Cluster: e.sel.Cluster, EtcdCluster: "events", Slot: "main-1"},
	}
	for name, sel := range others {
		t.Run(name, func(t *testing.T) {
			_, err := volumes.Ensure(context.Background(), provider(t), sel, disk(dev), e.target, e.opts)
			if !errors.Is(err, volumes.ErrWrongIdentity) {
				t.Fatalf("Ensure for %s: %v, want ErrWrongIdentity", sel, err)
			}
			t.Logf("refused: %v", err)
			for _, s := range []string{dev, e.sel.String(), sel.String()} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not name %q", err, s)
				}
			}
			if looptest.Mounted(t, e.target) {
				t.Fatalf("volume of %s was mounted for %s", e.sel, sel)
			}
			if h := looptest.Sum(t, dev, 0, 1<<20); h != head {
				t.Errorf("%s changed", dev)
			}
		})
	}
}

func TestEnsureRefusesVolumeMountedForAnotherSlot(t *testing.T) {
	e := newEnv(t, "main-1")
	dev, _ := looptest.Device(t, diskSize)
	ensure(t, e, dev)
	other := volumes.Selector{Cluster: e.sel.Cluster, EtcdCluster: "main", Slot: "main-2"}
	_, err := volumes.Ensure(context.Background(), provider(t), other, disk(dev), e.target, e.opts)
	if !errors.Is(err, volumes.ErrWrongIdentity) {
		t.Fatalf("Ensure for %s on a mounted volume of %s: %v, want ErrWrongIdentity", other, e.sel, err)
	}
}

// TestEnsureRefusesVolumeListedWithAnotherSlot needs no device: a volume
// the provider lists with one slot is never mounted for another.
func TestEnsureRefusesVolumeListedWithAnotherSlot(t *testing.T) {
	sel := volumes.Selector{Cluster: "c.k8s.local", EtcdCluster: "main", Slot: "main-1"}
	v := disk("/dev/nonexistent")
	v.Slot = "main-2"
	_, err := volumes.Ensure(context.Background(), provider(t), sel, v, filepath.Join(t.TempDir(), "mnt"), volumes.Options{})
	if !errors.Is(err, volumes.ErrWrongIdentity) || !strings.Contains(err.Error(), "main-2") {
		t.Fatalf("Ensure = %v, want ErrWrongIdentity naming main-2", err)
	}
}

func TestEnsureWaitsForLateDevice(t *testing.T) {
	e := newEnv(t, "main-1")
	link := filepath.Join(t.TempDir(), "by-id", "disk-etcd-main") // appears when the disk attaches
	img := looptest.Image(t, diskSize)
	waiting := make(chan struct{})
	e.opts.Logger = slog.New(onMessage{"waiting for device", waiting, slog.NewTextHandler(testWriter{t}, nil)})

	done := make(chan error, 1)
	var res *volumes.Result
	go func() {
		var err error
		res, err = volumes.Ensure(context.Background(), provider(t), e.sel, disk(link), e.target, e.opts)
		done <- err
	}()
	select {
	case <-waiting:
	case err := <-done:
		t.Fatalf("Ensure returned before the device existed: %v", err)
	}
	dev := looptest.Attach(t, img)
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dev, link); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if res.Device != dev || !res.Formatted || !looptest.Mounted(t, e.target) {
		t.Fatalf("result %+v, want %s formatted and mounted", res, dev)
	}
}

func TestEnsureWaitEndsWithContext(t *testing.T) {
	e := newEnv(t, "main-1")
	link := filepath.Join(t.TempDir(), "never-attached")
	waiting := make(chan struct{})
	e.opts.Logger = slog.New(onMessage{"waiting for device", waiting, slog.NewTextHandler(testWriter{t}, nil)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := provider(t)
	done := make(chan error, 1)
	go func() {
		_, err := volumes.Ensure(ctx, p, e.sel, disk(link), e.target, e.opts)
		done <- err
	}()
	<-waiting
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), link) {
			t.Fatalf("Ensure after cancel: %v, want context.Canceled naming %s", err, link)
		}
	case <-time.After(30 * time.Second): // a bound so a hang fails instead of stalling
		t.Fatal("Ensure did not return after its context was cancelled")
	}
}

func TestEnsureWaitsForDeviceLock(t *testing.T) {
	e := newEnv(t, "main-1")
	dev, _ := looptest.Device(t, diskSize)
	held, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := unix.Flock(int(held.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	waiting := make(chan struct{})
	e.opts.Logger = slog.New(onMessage{"waiting for the lock on the device", waiting, slog.NewTextHandler(testWriter{t}, nil)})
	p := provider(t)
	done := make(chan error, 1)
	go func() {
		_, err := volumes.Ensure(context.Background(), p, e.sel, disk(dev), e.target, e.opts)
		done <- err
	}()
	select {
	case <-waiting:
	case err := <-done:
		t.Fatalf("Ensure went ahead while another process held the lock on %s: %v", dev, err)
	}
	if rep, err := format.Inspect(context.Background(), dev); err != nil || !rep.Blank() {
		t.Fatalf("device touched while locked: %+v %v", rep, err)
	}
	if err := unix.Flock(int(held.Fd()), unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Ensure after the lock was released: %v", err)
	}
	if !looptest.Mounted(t, e.target) {
		t.Fatal("not mounted")
	}
}

// onMessage closes ch the first time a record with message msg is handled.
type onMessage struct {
	msg string
	ch  chan struct{}
	slog.Handler
}

func (h onMessage) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		select {
		case <-h.ch:
		default:
			close(h.ch)
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h onMessage) WithAttrs(a []slog.Attr) slog.Handler {
	return onMessage{h.msg, h.ch, h.Handler.WithAttrs(a)}
}

func (h onMessage) WithGroup(g string) slog.Handler {
	return onMessage{h.msg, h.ch, h.Handler.WithGroup(g)}
}

func writeAt(t *testing.T, path string, b []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	b[0] |= 1 // never all zeros
	return b
}
