// Package looptest gives tests real block devices: sparse image files
// attached as loop devices, detached (and anything mounted unmounted) in
// t.Cleanup even when the test fails.
package looptest

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Image creates a sparse, zero-filled image file of size bytes.
func Image(t testing.TB, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// Attach attaches the image as a loop device (losetup -f --show) and detaches
// it in t.Cleanup.
func Attach(t testing.TB, img string) string {
	t.Helper()
	out, err := exec.Command("losetup", "-f", "--show", img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup -f --show %s: %v: %s", img, err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// Device returns a new blank loop device of size bytes and its image file.
func Device(t testing.TB, size int64) (dev, img string) {
	t.Helper()
	img = Image(t, size)
	return Attach(t, img), img
}

// Run runs a command, failing the test with its output when it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Sum returns the sha256 of n bytes of the file or device at offset off
// (negative: from the end).
func Sum(t testing.TB, path string, off, n int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if off < 0 {
		size, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			t.Fatal(err)
		}
		off += size
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, off, n)); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// UnmountOnCleanup unmounts target in t.Cleanup if something is mounted
// there. Register it after the devices and directories it depends on, so it
// runs before they are removed.
func UnmountOnCleanup(t testing.TB, target string) {
	t.Helper()
	t.Cleanup(func() {
		for range 8 { // stacked mounts
			err := unix.Unmount(target, 0)
			if err == unix.EINVAL || err == unix.ENOENT {
				return
			}
			if err != nil {
				t.Errorf("unmounting %s: %v", target, err)
				return
			}
		}
	})
}

// Mounted tells whether anything is mounted at target.
func Mounted(t testing.TB, target string) bool {
	t.Helper()
	if r, err := filepath.EvalSymlinks(target); err == nil {
		target = r
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == target {
			return true
		}
	}
	return false
}
