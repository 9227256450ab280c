// Package format inspects block devices and formats them only when they are
// blank: no signature found by a low-level blkid probe and nothing but zeros
// in the first and last MiB. It also reads files from an unmounted ext4
// filesystem (debugfs), which is how a volume's identity is checked before
// it is mounted.
package format

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// ProbeSize is how much is read at the start and at the end of a device when
// checking that it is blank.
const ProbeSize = 1 << 20

// ErrNotBlank is returned when a device holds a signature or data.
var ErrNotBlank = errors.New("device is not blank")

// Report is what Inspect found on a device.
type Report struct {
	Device string
	// Size of the device in bytes.
	Size int64
	// Signatures are blkid's low-level probe tags (TYPE, PTTYPE, LABEL,
	// UUID, ...); empty when blkid found nothing.
	Signatures map[string]string
	// NonZeroAt is the offset of the first non-zero byte found in the first
	// or last ProbeSize bytes, or -1.
	NonZeroAt int64
}

// Blank tells whether the device may be formatted.
func (r *Report) Blank() bool { return len(r.Signatures) == 0 && r.NonZeroAt < 0 }

// Type is the filesystem type blkid found, if any.
func (r *Report) Type() string { return r.Signatures["TYPE"] }

// Describe says what was found, for errors and logs.
func (r *Report) Describe() string {
	var parts []string
	s := r.Signatures
	if t := s["TYPE"]; t != "" {
		d := t + " " + usageNames[s["USAGE"]]
		if usageNames[s["USAGE"]] == "" {
			d = t + " signature"
		}
		var ids []string
		for _, k := range []string{"LABEL", "UUID"} {
			if v := s[k]; v != "" {
				ids = append(ids, k+"="+v)
			}
		}
		if len(ids) > 0 {
			d += " (" + strings.Join(ids, " ") + ")"
		}
		parts = append(parts, d)
	}
	if pt := s["PTTYPE"]; pt != "" {
		parts = append(parts, pt+" partition table")
	}
	if _, ok := s["AMBIGUOUS"]; ok {
		parts = append(parts, "several conflicting signatures (blkid -p exit 8)")
	}
	if len(parts) == 0 && len(s) > 0 {
		keys := make([]string, 0, len(s))
		for k, v := range s {
			keys = append(keys, k+"="+v)
		}
		sort.Strings(keys)
		parts = append(parts, "signature "+strings.Join(keys, " "))
	}
	if r.NonZeroAt >= 0 && len(parts) == 0 {
		parts = append(parts, fmt.Sprintf("non-zero data at byte %d with no known signature", r.NonZeroAt))
	}
	if len(parts) == 0 {
		return "nothing (blank)"
	}
	return strings.Join(parts, ", ")
}

func firstNonZero(b []byte) int {
	for i, c := range b {
		if c != 0 {
			return i
		}
	}
	return -1
}

var usageNames = map[string]string{"filesystem": "filesystem", "raid": "RAID member", "crypto": "encrypted volume"}

// Probe runs a low-level blkid probe (blkid -p, which reads the device
// rather than a cache) and returns the tags found; empty when none.
func Probe(ctx context.Context, device string) (map[string]string, error) {
	cmd := exec.CommandContext(ctx, "blkid", "-p", "-o", "export", device)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	tags := map[string]string{}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && exit.ExitCode() == 2: // nothing identified
		return tags, nil
	case errors.As(err, &exit) && exit.ExitCode() == 8: // ambiguous: several signatures
		tags["AMBIGUOUS"] = "true"
	default:
		return nil, fmt.Errorf("probing %s with blkid -p: %w: %s", device, err, strings.TrimSpace(stderr.String()))
	}
	for _, line := range strings.Split(stdout.String(), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok || k == "DEVNAME" {
			continue
		}
		tags[k] = v
	}
	return tags, nil
}

// Inspect probes the device for signatures and reads its first and last
// ProbeSize bytes. The device is opened exclusively (O_EXCL), so a device
// that is mounted or held by another driver is an error.
func Inspect(ctx context.Context, device string) (*Report, error) {
	f, err := os.OpenFile(device, os.O_RDONLY|unix.O_EXCL, 0)
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("inspecting %s: device is in use (mounted or held by another driver): %w", device, err)
		}
		return nil, fmt.Errorf("inspecting %s: %w", device, err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("inspecting %s: finding its size: %w", device, err)
	}
	r := &Report{Device: device, Size: size, NonZeroAt: -1}
	if size == 0 {
		return nil, fmt.Errorf("inspecting %s: device has size 0 (not attached?)", device)
	}
	regions := [][2]int64{{0, min(size, ProbeSize)}}
	if size > ProbeSize {
		start := max(size-ProbeSize, ProbeSize)
		regions = append(regions, [2]int64{start, size})
	}
	buf := make([]byte, ProbeSize)
	for _, reg := range regions {
		n := reg[1] - reg[0]
		if _, err := f.ReadAt(buf[:n], reg[0]); err != nil {
			return nil, fmt.Errorf("inspecting %s: reading bytes %d-%d: %w", device, reg[0], reg[1], err)
		}
		if i := firstNonZero(buf[:n]); i >= 0 {
			r.NonZeroAt = reg[0] + int64(i)
			break
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.Signatures, err = Probe(ctx, device)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// Options says how to format.
type Options struct {
	// Label is the ext4 label (at most 16 bytes).
	Label string
	// Files are written at the filesystem root by mkfs itself (mkfs.ext4 -d),
	// so the filesystem never exists without them. Names are plain file names.
	Files map[string][]byte
	// Logger receives progress; nil discards.
	Logger *slog.Logger
}

// Format makes an ext4 filesystem on the device, but only when Inspect finds
// it blank: anything else is refused with ErrNotBlank and an error naming the
// device and what was found. The files are read back to check they landed.
func Format(ctx context.Context, device string, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(opts.Label) > 16 {
		return fmt.Errorf("formatting %s: label %q is longer than 16 bytes", device, opts.Label)
	}
	for name := range opts.Files {
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
			return fmt.Errorf("formatting %s: file name %q is not a plain file name", device, name)
		}
	}
	rep, err := Inspect(ctx, device)
	if err != nil {
		return fmt.Errorf("formatting %s: %w", device, err)
	}
	if !rep.Blank() {
		return fmt.Errorf("refusing to format %s: found %s: %w", device, rep.Describe(), ErrNotBlank)
	}
	src, err := os.MkdirTemp("", "kopsnode-mkfs-")
	if err != nil {
		return fmt.Errorf("formatting %s: %w", device, err)
	}
	defer os.RemoveAll(src)
	if err := os.Chmod(src, 0o755); err != nil {
		return fmt.Errorf("formatting %s: %w", device, err)
	}
	for name, data := range opts.Files {
		if err := os.WriteFile(filepath.Join(src, name), data, 0o644); err != nil {
			return fmt.Errorf("formatting %s: staging %s: %w", device, name, err)
		}
	}
	log.Info("formatting blank device", "device", device, "fstype", "ext4", "label", opts.Label, "size", rep.Size)
	cmd := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-L", opts.Label, "-d", src, device)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("formatting %s: mkfs.ext4: %w: %s", device, err, strings.TrimSpace(string(out)))
	}
	for name, want := range opts.Files {
		got, err := ReadFile(ctx, device, name)
		if err != nil {
			return fmt.Errorf("formatting %s: checking %s: %w", device, name, err)
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("formatting %s: %s reads back different from what was written", device, name)
		}
	}
	return nil
}

// ReadFile reads a file at the root of the unmounted ext4 filesystem on the
// device, with debugfs (read-only). A missing file is an error wrapping
// fs.ErrNotExist.
func ReadFile(ctx context.Context, device, name string) ([]byte, error) {
	if name == "" || strings.ContainsAny(name, "/\x00\" \n") {
		return nil, fmt.Errorf("reading %s from %s: not a plain file name", name, device)
	}
	dir, err := os.MkdirTemp("", "kopsnode-debugfs-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "out")
	cmd := exec.CommandContext(ctx, "debugfs", "-R", "dump /"+name+" "+out, device)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("reading %s from %s with debugfs: %w: %s", name, device, err, strings.TrimSpace(stderr.String()))
	}
	b, err := os.ReadFile(out)
	if errors.Is(err, fs.ErrNotExist) {
		msg := strings.TrimSpace(stderr.String())
		if strings.Contains(msg, "not found") {
			return nil, fmt.Errorf("reading %s from %s: %w", name, device, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("reading %s from %s with debugfs: %s", name, device, msg)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s from %s: %w", name, device, err)
	}
	return b, nil
}
