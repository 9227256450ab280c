// Package metal is the volume provider of machines whose disks already exist
// (bare metal, or VMs with disks given at boot). A member's volume is a
// local block device: one already formatted for a slot of the etcd cluster
// is found among the scanned devices by its identity file (so a disk that
// changed name, or moved to a replacement machine, is still found); a new
// member's volume is made on the disk the node configuration chooses for the
// etcd cluster, by device path, GPT partition label or serial number, which
// volumes.Ensure formats only if it is blank. Disks cannot be created or
// detached: Create and Detach return volumes.ErrNotSupported, and every disk
// is attached here.
package metal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/volumes"
	"github.com/kopsnode/agents/volumes/format"
)

// DiskChoice chooses the disk of a new member's volume: at most one field
// is set (pkg/config validates it as etcdClusters[].volume).
type DiskChoice struct {
	// Device is a device path, the same on every machine of the group.
	Device string
	// PartitionLabel is a GPT partition name (/dev/disk/by-partlabel/...).
	PartitionLabel string
	// Serials are disk serial numbers: the machine's disk with one of them.
	Serials []string
}

func (d DiskChoice) empty() bool {
	return d.Device == "" && d.PartitionLabel == "" && len(d.Serials) == 0
}

// String says what is configured, for status errors.
func (d DiskChoice) String() string {
	switch {
	case d.Device != "":
		return "device " + d.Device
	case d.PartitionLabel != "":
		return "partition label " + d.PartitionLabel
	case len(d.Serials) > 0:
		return "serials " + strings.Join(d.Serials, ", ")
	}
	return "no disk"
}

// Config configures the provider.
type Config struct {
	// Disks maps an etcd cluster name (main, events) to the disk chosen
	// for a new member's volume.
	Disks map[string]DiskChoice
	// Scan lists absolute glob patterns of devices searched for volumes
	// already formatted for a slot. Empty: every block device of
	// /sys/class/block with a non-zero size.
	Scan []string
}

// ConfigFromNode builds the provider's configuration from a node
// configuration: spec.volume.metal and each etcdClusters[].volume.
func ConfigFromNode(s config.NodeConfigSpec) Config {
	c := Config{Disks: map[string]DiskChoice{}}
	if s.Volume != nil && s.Volume.Metal != nil {
		c.Scan = slices.Clone(s.Volume.Metal.Scan)
	}
	for _, e := range s.EtcdClusters {
		d := DiskChoice{Device: e.Volume.Device, PartitionLabel: e.Volume.PartitionLabel, Serials: slices.Clone(e.Volume.Serials)}
		if !d.empty() {
			c.Disks[e.Name] = d
		}
	}
	return c
}

// Validate reports every problem by field path.
func (c Config) Validate() error {
	var errs []error
	names := make([]string, 0, len(c.Disks))
	for n := range c.Disks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		d := c.Disks[name]
		if name == "" {
			errs = append(errs, errors.New("disks: empty etcd cluster name"))
		}
		if d.Device != "" && !filepath.IsAbs(d.Device) {
			errs = append(errs, fmt.Errorf("disks.%s.device: %q is not an absolute path", name, d.Device))
		}
		if strings.Contains(d.PartitionLabel, "/") {
			errs = append(errs, fmt.Errorf("disks.%s.partitionLabel: %q contains a slash", name, d.PartitionLabel))
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
	// sysRoot and devRoot are "/sys" and "/dev"; tests point them at a
	// fake tree to check serial and partition label lookups.
	sysRoot, devRoot string
}

var _ volumes.Provider = (*Provider)(nil)

// New returns a provider; log may be nil.
func New(cfg Config, log *slog.Logger) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("metal volume provider: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Provider{cfg: cfg, log: log, sysRoot: "/sys", devRoot: "/dev"}, nil
}

// Choice returns the disk chosen for etcdCluster's new member volumes.
func (p *Provider) Choice(etcdCluster string) DiskChoice { return p.cfg.Disks[etcdCluster] }

// List returns the scanned devices whose identity file names a slot of the
// etcd cluster, and the disk chosen for it by the configuration when that
// is not one of them (Slot empty; Ensure formats it only when blank and
// refuses anything else). Every volume is attached here.
func (p *Provider) List(ctx context.Context, cluster, etcdCluster string) ([]volumes.Volume, error) {
	devs, err := p.candidates()
	if err != nil {
		return nil, err
	}
	var found []volumes.Volume
	seen := map[string]bool{}
	for _, d := range devs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		seen[d] = true
		if v, ok := p.probe(ctx, d, d, cluster, etcdCluster); ok {
			found = append(found, v)
		}
	}
	chosen, err := p.chosen(p.cfg.Disks[etcdCluster])
	if err != nil {
		return nil, err
	}
	for _, c := range chosen {
		r, err := filepath.EvalSymlinks(c)
		if err == nil && seen[r] {
			if slices.ContainsFunc(found, func(v volumes.Volume) bool { return v.Device == r }) {
				continue // already listed with its slot
			}
		} else if err == nil {
			// Not among the scanned devices (a name the scan does not
			// cover): the chosen disk may still carry a slot.
			if v, ok := p.probe(ctx, c, r, cluster, etcdCluster); ok {
				found = append(found, v)
				continue
			}
		}
		found = append(found, volumes.Volume{ID: c, Device: c, Attachment: volumes.Attachment{State: volumes.AttachedHere}})
	}
	return found, nil
}

// probe returns the volume on device path dev (resolved: real) when it is a
// filesystem formatted for a slot of the etcd cluster of the cluster.
func (p *Provider) probe(ctx context.Context, dev, real, cluster, etcdCluster string) (volumes.Volume, bool) {
	tags, err := format.Probe(ctx, real)
	if err != nil {
		p.log.Debug("skipping device", "device", dev, "err", err)
		return volumes.Volume{}, false
	}
	if tags["TYPE"] != volumes.FSType || !strings.HasPrefix(tags["LABEL"], volumes.LabelPrefix) {
		return volumes.Volume{}, false
	}
	b, err := format.ReadFile(ctx, real, volumes.IdentityFileName)
	if err != nil {
		p.log.Warn("a device labelled as a kopsnode volume has no readable identity; skipping it", "device", dev, "err", err)
		return volumes.Volume{}, false
	}
	id, err := volumes.ParseIdentity(dev+":/"+volumes.IdentityFileName, b)
	if err != nil {
		p.log.Warn("skipping device", "device", dev, "err", err)
		return volumes.Volume{}, false
	}
	if id.Cluster != cluster || id.EtcdCluster != etcdCluster {
		return volumes.Volume{}, false
	}
	return volumes.Volume{ID: dev, Device: dev, Label: tags["LABEL"], Slot: id.Slot, Attachment: volumes.Attachment{State: volumes.AttachedHere}}, true
}

// chosen resolves a disk choice to device paths. A device or partition
// label path is returned even before it exists (Ensure waits for it); a
// serial is looked up among the disks present.
func (p *Provider) chosen(d DiskChoice) ([]string, error) {
	switch {
	case d.Device != "":
		return []string{d.Device}, nil
	case d.PartitionLabel != "":
		return []string{filepath.Join(p.devRoot, "disk", "by-partlabel", d.PartitionLabel)}, nil
	case len(d.Serials) > 0:
		return p.bySerial(d.Serials)
	}
	return nil, nil
}

// bySerial returns the disks whose serial number (as the kernel reports
// it: /sys/class/block/<disk>/serial or .../device/serial) is one of want.
func (p *Provider) bySerial(want []string) ([]string, error) {
	dir := filepath.Join(p.sysRoot, "class", "block")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing block devices: %w", err)
	}
	var out []string
	for _, e := range ents {
		for _, f := range []string{"serial", "device/serial"} {
			b, err := os.ReadFile(filepath.Join(dir, e.Name(), f))
			if err != nil {
				continue
			}
			if slices.Contains(want, strings.TrimSpace(string(b))) {
				out = append(out, filepath.Join(p.devRoot, e.Name()))
				break
			}
		}
	}
	return out, nil
}

// Create is not possible on metal: the disks are what the machine has.
func (p *Provider) Create(context.Context, volumes.Selector, config.VolumeSpec) (volumes.Volume, error) {
	return volumes.Volume{}, fmt.Errorf("creating a disk: %w", volumes.ErrNotSupported)
}

// Attach returns the device path: local disks need no attaching.
func (p *Provider) Attach(_ context.Context, v volumes.Volume) (string, error) {
	if v.Device == "" {
		return "", fmt.Errorf("metal volume %q has no device path", v.ID)
	}
	return v.Device, nil
}

// Detach is not possible on metal.
func (p *Provider) Detach(_ context.Context, v volumes.Volume) error {
	return fmt.Errorf("detaching %s: %w", v.ID, volumes.ErrNotSupported)
}

// candidates lists the devices to scan, resolved and without duplicates.
func (p *Provider) candidates() ([]string, error) {
	var paths []string
	if len(p.cfg.Scan) == 0 {
		dir := filepath.Join(p.sysRoot, "class", "block")
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("listing block devices: %w", err)
		}
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(dir, e.Name(), "size"))
			if err != nil || strings.TrimSpace(string(b)) == "0" {
				continue
			}
			paths = append(paths, filepath.Join(p.devRoot, e.Name()))
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
