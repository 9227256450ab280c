package volumes

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kopsnode/agents/volumes/format"
	"github.com/kopsnode/agents/volumes/mount"
)

// Options tunes Ensure. The zero value is usable.
type Options struct {
	// Logger receives progress; nil discards.
	Logger *slog.Logger
	// PollInterval is how often a missing device is looked for (default 500ms).
	PollInterval time.Duration
	// DeviceTimeout bounds the wait for the device (default 5 minutes); the
	// context ends it sooner.
	DeviceTimeout time.Duration
	// Now stamps the identity file (for humans only); default time.Now.
	Now func() time.Time
}

// Result says what Ensure did.
type Result struct {
	Device   string
	Target   string
	Identity Identity
	// Formatted: the device was blank and was formatted now.
	Formatted bool
	// AlreadyMounted: nothing was done; the volume was mounted at the target.
	AlreadyMounted bool
}

// Ensure mounts the slot's volume vol (chosen by package slots) at target:
// it attaches it, waits for the device, formats it only if blank (writing
// the slot's identity file), refuses a volume whose identity file names
// another slot or cluster (never mounting it), checks the filesystem and
// mounts it. Running it again is a no-op.
func Ensure(ctx context.Context, p Provider, sel Selector, vol Volume, target string, opts Options) (*Result, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	if err := sel.Validate(); err != nil {
		return nil, err
	}
	if !filepath.IsAbs(target) {
		return nil, fmt.Errorf("volume target %q is not an absolute path", target)
	}
	if vol.Slot != "" && vol.Slot != sel.Slot {
		return nil, fmt.Errorf("volume %s carries slot %s, not %s: %w", vol.ID, vol.Slot, sel.Slot, ErrWrongIdentity)
	}
	log = log.With("member", sel.String(), "target", target, "volume", vol.ID)

	path, err := p.Attach(ctx, vol)
	if err != nil {
		return nil, fmt.Errorf("attaching volume %s: %w", vol.ID, err)
	}
	timeout := opts.DeviceTimeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	dev, err := mount.WaitForDevice(wctx, log, path, opts.PollInterval)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", vol.ID, err)
	}
	res := &Result{Device: dev, Target: target}

	unlock, err := lockDevice(ctx, log, dev, opts.PollInterval)
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", vol.ID, err)
	}
	defer unlock()

	st, err := mount.Check(dev, target)
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", vol.ID, err)
	}
	if st.AtTarget {
		where := filepath.Join(target, IdentityFileName)
		b, err := os.ReadFile(where)
		if err != nil {
			return nil, fmt.Errorf("volume %s is mounted at %s but its identity cannot be read: %w", dev, target, err)
		}
		id, err := ParseIdentity(where, b)
		if err != nil {
			return nil, err
		}
		if err := matches(dev, id, sel); err != nil {
			return nil, err
		}
		res.Identity, res.AlreadyMounted = id, true
		log.Info("volume already mounted", "device", dev)
		return res, nil
	}
	if len(st.Elsewhere) > 0 {
		return nil, fmt.Errorf("volume %s: %s is mounted at %s, not at %s: %w", vol.ID, dev, strings.Join(st.Elsewhere, ", "), target, mount.ErrMountedElsewhere)
	}

	rep, err := format.Inspect(ctx, dev)
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", vol.ID, err)
	}
	switch {
	case rep.Blank():
		id := NewIdentity(sel, now().UTC().Format(time.RFC3339), dev)
		err := format.Format(ctx, dev, format.Options{
			Label:  sel.Label(),
			Files:  map[string][]byte{IdentityFileName: id.Marshal()},
			Logger: log,
		})
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", vol.ID, err)
		}
		res.Formatted = true
	case rep.Type() == FSType:
		// Possibly ours: the identity file decides.
	default:
		return nil, fmt.Errorf("volume %s: refusing to use %s: found %s, which is not a volume formatted by kopsnode: %w", vol.ID, dev, rep.Describe(), format.ErrNotBlank)
	}

	where := dev + ":/" + IdentityFileName
	b, err := format.ReadFile(ctx, dev, IdentityFileName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("volume %s: refusing to use %s: found %s without %s, so not a volume formatted by kopsnode: %w", vol.ID, dev, rep.Describe(), IdentityFileName, format.ErrNotBlank)
	}
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", vol.ID, err)
	}
	id, err := ParseIdentity(where, b)
	if err != nil {
		return nil, err
	}
	if err := matches(dev, id, sel); err != nil {
		return nil, err
	}
	res.Identity = id

	log.Info("checking filesystem", "device", dev)
	if err := mount.Fsck(ctx, log, dev); err != nil {
		return nil, err
	}
	already, err := mount.Mount(ctx, log, dev, target, FSType)
	if err != nil {
		return nil, err
	}
	res.AlreadyMounted = already
	return res, nil
}

func matches(dev string, id Identity, sel Selector) error {
	if id.Selector != sel {
		return fmt.Errorf("refusing to mount %s: it belongs to %s, not to %s: %w", dev, id.Selector, sel, ErrWrongIdentity)
	}
	return nil
}

// lockDevice takes an exclusive BSD lock (flock) on the device node, held
// until unlock. It serialises two Ensure runs on one device (so both cannot
// see it blank and format it in turn) and, as systemd's block device locking
// convention says, keeps udev from probing the device while it is formatted.
func lockDevice(ctx context.Context, log *slog.Logger, dev string, poll time.Duration) (unlock func(), err error) {
	f, err := os.Open(dev)
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", dev, err)
	}
	if poll <= 0 {
		poll = 500 * time.Millisecond
	}
	var t *time.Ticker
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", dev, err)
		}
		if t == nil {
			log.Info("waiting for the lock on the device", "device", dev)
			t = time.NewTicker(poll)
			defer t.Stop()
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for the lock on %s (held by another process): %w", dev, ctx.Err())
		case <-t.C:
		}
	}
}
