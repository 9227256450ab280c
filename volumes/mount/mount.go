// Package mount waits for block devices, checks their filesystem and mounts
// them idempotently: a device already mounted at the target is fine, another
// device there is an error naming both.
package mount

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Errors callers test with errors.Is.
var (
	// ErrTargetBusy: another device is mounted at the target.
	ErrTargetBusy = errors.New("another device is mounted at the target")
	// ErrMountedElsewhere: the device is mounted somewhere other than the target.
	ErrMountedElsewhere = errors.New("device is mounted elsewhere")
	// ErrTargetNotEmpty: the target directory holds files that a mount would hide.
	ErrTargetNotEmpty = errors.New("target directory is not empty")
)

// Info is one line of /proc/self/mountinfo.
type Info struct {
	Major, Minor uint32
	MountPoint   string
	FSType       string
	Source       string
}

// ParseMountInfo parses the mountinfo format (proc(5)).
func ParseMountInfo(r io.Reader) ([]Info, error) {
	var out []Info
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		pre, post, ok := strings.Cut(line, " - ")
		f := strings.Fields(pre)
		g := strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 2 {
			return nil, fmt.Errorf("mountinfo line %d: malformed: %q", n, line)
		}
		maj, min, ok := strings.Cut(f[2], ":")
		ma, err1 := strconv.ParseUint(maj, 10, 32)
		mi, err2 := strconv.ParseUint(min, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("mountinfo line %d: bad device number %q", n, f[2])
		}
		out = append(out, Info{Major: uint32(ma), Minor: uint32(mi), MountPoint: unescape(f[4]), FSType: g[0], Source: unescape(g[1])})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading mountinfo: %w", err)
	}
	return out, nil
}

// unescape undoes the octal escapes (\040 for a space) of mountinfo.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Mounts reads this process's mount table.
func Mounts() ([]Info, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	return ParseMountInfo(bytes.NewReader(b))
}

// DeviceNumber returns the major and minor number of a block device.
func DeviceNumber(device string) (major, minor uint32, err error) {
	var st unix.Stat_t
	if err := unix.Stat(device, &st); err != nil {
		return 0, 0, fmt.Errorf("stat %s: %w", device, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, 0, fmt.Errorf("%s is not a block device", device)
	}
	return unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)), nil
}

// Status is where a device is mounted relative to a target.
type Status struct {
	// AtTarget: the device is the topmost mount at the target.
	AtTarget bool
	// Elsewhere lists other mount points of the device.
	Elsewhere []string
}

// Check tells whether the device is mounted at the target. Another device at
// the target is ErrTargetBusy, naming both.
func Check(device, target string) (Status, error) {
	var st Status
	maj, min, err := DeviceNumber(device)
	if err != nil {
		return st, err
	}
	target = resolve(target)
	mounts, err := Mounts()
	if err != nil {
		return st, err
	}
	var top *Info
	for i := range mounts {
		m := &mounts[i]
		if m.MountPoint == target {
			top = m // later lines are mounted on top
		} else if m.Major == maj && m.Minor == min {
			st.Elsewhere = append(st.Elsewhere, m.MountPoint)
		}
	}
	if top == nil {
		return st, nil
	}
	if top.Major != maj || top.Minor != min {
		return st, fmt.Errorf("%s (%d:%d) is mounted at %s, not %s (%d:%d): %w", top.Source, top.Major, top.Minor, target, device, maj, min, ErrTargetBusy)
	}
	st.AtTarget = true
	return st, nil
}

func resolve(p string) string {
	p = filepath.Clean(p)
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}

// WaitForDevice polls until path (a device or a symlink to one, such as
// /dev/disk/by-id/...) is a block device with a non-zero size, and returns
// the resolved device path. It ends with the context.
func WaitForDevice(ctx context.Context, log *slog.Logger, path string, poll time.Duration) (string, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if poll <= 0 {
		poll = 500 * time.Millisecond
	}
	var t *time.Ticker
	for {
		dev, why := deviceReady(path)
		if why == "" {
			return dev, nil
		}
		if t == nil {
			log.Info("waiting for device", "device", path, "reason", why)
			t = time.NewTicker(poll)
			defer t.Stop()
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for device %s (%s): %w", path, why, ctx.Err())
		case <-t.C:
		}
	}
}

// deviceReady returns the resolved device, or why it is not ready.
func deviceReady(path string) (string, string) {
	dev, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", err.Error()
	}
	maj, min, err := DeviceNumber(dev)
	if err != nil {
		return "", err.Error()
	}
	b, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/size", maj, min))
	if err != nil {
		return "", err.Error()
	}
	if s := strings.TrimSpace(string(b)); s == "0" {
		return "", "size is 0 (no medium or backing file yet)"
	}
	return dev, ""
}

// Fsck checks an ext2/3/4 filesystem with e2fsck -p, which repairs what is
// safe to repair. Exit 1 (errors corrected) and 2 (corrected, reboot
// advised: only matters for the root filesystem) are fine.
func Fsck(ctx context.Context, log *slog.Logger, device string) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	out, err := exec.CommandContext(ctx, "e2fsck", "-p", device).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exit) && (exit.ExitCode() == 1 || exit.ExitCode() == 2):
		log.Warn("filesystem errors corrected", "device", device, "exit", exit.ExitCode(), "output", strings.TrimSpace(string(out)))
		return nil
	default:
		return fmt.Errorf("checking filesystem on %s: e2fsck -p: %w: %s", device, err, strings.TrimSpace(string(out)))
	}
}

// Mount mounts the device at the target (created if missing), idempotently:
// already mounted there returns already=true. Another device at the target,
// the device mounted elsewhere, or a non-empty target directory (whose files
// the mount would hide) is an error.
func Mount(ctx context.Context, log *slog.Logger, device, target, fstype string) (already bool, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	st, err := Check(device, target)
	if err != nil {
		return false, fmt.Errorf("mounting %s at %s: %w", device, target, err)
	}
	if st.AtTarget {
		return true, nil
	}
	if len(st.Elsewhere) > 0 {
		return false, fmt.Errorf("mounting %s at %s: it is mounted at %s: %w", device, target, strings.Join(st.Elsewhere, ", "), ErrMountedElsewhere)
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return false, fmt.Errorf("mounting %s: creating %s: %w", device, target, err)
	}
	ents, err := os.ReadDir(target)
	if err != nil {
		return false, fmt.Errorf("mounting %s: reading %s: %w", device, target, err)
	}
	if len(ents) > 0 {
		return false, fmt.Errorf("mounting %s at %s: %s holds %d entries (first %q) that the mount would hide: %w", device, target, target, len(ents), ents[0].Name(), ErrTargetNotEmpty)
	}
	if err := unix.Mount(device, target, fstype, unix.MS_NOATIME, ""); err != nil {
		return false, fmt.Errorf("mounting %s (%s) at %s: %w", device, fstype, target, err)
	}
	log.Info("mounted", "device", device, "target", target, "fstype", fstype)
	return false, nil
}

// Unmount unmounts the target; not mounted is fine.
func Unmount(target string) error {
	err := unix.Unmount(target, 0)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return fmt.Errorf("unmounting %s: %w", target, err)
}
