// Package local is the bare-metal volume provider: volumes are local block
// devices. A member's volume is found by its filesystem label among the
// scanned devices (so a disk that changed name is still found), or else is
// the device configured for its etcd cluster, which Ensure formats only if it
// is blank. Attach is a no-op.
package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/kopsnode/agents/volumes"
	"github.com/kopsnode/agents/volumes/format"
)

// Config configures the provider.
type Config struct {
	// Devices maps an etcd cluster name (main, events) to the device that
	// holds, or will hold, its member's volume. Prefer stable paths such as
	// /dev/disk/by-id/...; the device may appear after Find.
	Devices map[string]string `json:"devices" yaml:"devices"`
	// Scan lists glob patterns of devices searched for an already formatted
	// volume of the member (by label). Empty: every block device of
	// /sys/class/block with a non-zero size.
	Scan []string `json:"scan,omitempty" yaml:"scan,omitempty"`
}

// Validate reports every problem by field path.
func (c Config) Validate() error {
	var errs []error
	for name, dev := range c.Devices {
		if name == "" {
			errs = append(errs, errors.New("devices: empty etcd cluster name"))
		}
		if !filepath.IsAbs(dev) {
			errs = append(errs, fmt.Errorf("devices.%s: %q is not an absolute path", name, dev))
		}
	}
	for i, p := range c.Scan {
		if _, err := filepath.Match(p, ""); err != nil || !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("scan[%d]: %q is not an absolute glob pattern", i, p))
		}
	}
	return errors.Join(errs...)
}

// Provider finds volumes on local block devices.
type Provider struct {
	cfg Config
	log *slog.Logger
}

var _ volumes.Provider = (*Provider)(nil)

// New returns a provider; log may be nil.
func New(cfg Config, log *slog.Logger) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("local volume provider: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Provider{cfg: cfg, log: log}, nil
}

// Find returns the scanned devices whose label is the member's; when there
// are none, the device configured for the member's etcd cluster.
func (p *Provider) Find(ctx context.Context, sel volumes.Selector) ([]volumes.Volume, error) {
	if err := sel.Validate(); err != nil {
		return nil, err
	}
	devs, err := p.candidates()
	if err != nil {
		return nil, err
	}
	want := sel.Label()
	var found []volumes.Volume
	for _, d := range devs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		tags, err := format.Probe(ctx, d)
		if err != nil {
			p.log.Debug("skipping device", "device", d, "err", err)
			continue
		}
		if tags["LABEL"] == want {
			found = append(found, volumes.Volume{ID: d, Device: d, Label: want})
		}
	}
	if len(found) > 0 {
		return found, nil
	}
	if d, ok := p.cfg.Devices[sel.EtcdCluster]; ok {
		return []volumes.Volume{{ID: d, Device: d}}, nil
	}
	return nil, nil
}

// Attach returns the device path: local devices need no attaching.
func (p *Provider) Attach(_ context.Context, v volumes.Volume) (string, error) {
	if v.Device == "" {
		return "", fmt.Errorf("local volume %q has no device path", v.ID)
	}
	return v.Device, nil
}

// candidates lists the devices to scan, resolved and without duplicates.
func (p *Provider) candidates() ([]string, error) {
	var paths []string
	if len(p.cfg.Scan) == 0 {
		ents, err := os.ReadDir("/sys/class/block")
		if err != nil {
			return nil, fmt.Errorf("listing block devices: %w", err)
		}
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join("/sys/class/block", e.Name(), "size"))
			if err != nil || strings.TrimSpace(string(b)) == "0" {
				continue
			}
			paths = append(paths, filepath.Join("/dev", e.Name()))
		}
	}
	for _, pat := range p.cfg.Scan {
		m, err := filepath.Glob(pat)
		if err != nil {
			return nil, fmt.Errorf("scan pattern %q: %w", pat, err)
		}
		paths = append(paths, m...)
	}
	seen := map[string]bool{}
	var out []string
	for _, pth := range paths {
		r, err := filepath.EvalSymlinks(pth)
		if err != nil || seen[r] {
			continue
		}
		if fi, err := os.Stat(r); err != nil || fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
			continue
		}
		seen[r] = true
		out = append(out, r)
	}
	sort.Strings(out)
	return out, nil
}
