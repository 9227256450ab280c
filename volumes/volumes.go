// Package volumes finds, attaches, safely formats and mounts the volume of an
// etcd member. An etcd cluster of N members has N member slots
// (SlotName: "main-1" .. "main-N"); a volume carries one slot, written into
// its filesystem's identity file (and, on clouds, into the volume's tags)
// when it is first claimed, and the slot is the member's name for
// etcd-manager and etcd. A machine holds at most one slot per etcd cluster
// (package volumes/slots decides which, with a lease record in the state
// store); a replacement machine adopts a dead member's slot and volume.
// Providers (one folder each: volumes/metal, volumes/aws) list, create,
// attach and detach volumes; Ensure formats only blank devices and mounts.
package volumes

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/kopsnode/agents/pkg/config"
)

// IdentityFileName is the file at the root of every volume's filesystem that
// names the member slot the volume belongs to. etcd-manager reads it from its
// data directory (the mount point) as its identity. It is written by mkfs itself
// (mkfs.ext4 -d), so a filesystem of ours never exists without it.
const IdentityFileName = ".kopsnode-volume.json"

// LabelPrefix starts the ext4 label of every volume formatted here. The label
// is only a hint for finding a volume; the identity file decides.
const LabelPrefix = "kn-etcd-"

// IdentityAPIVersion and IdentityKind version the identity file.
const (
	IdentityAPIVersion = "volumes.kopsnode.io/v1"
	IdentityKind       = "VolumeIdentity"
)

// FSType is the filesystem every volume is formatted with.
const FSType = "ext4"

// Errors callers test with errors.Is.
var (
	// ErrAmbiguous: more than one volume claims one slot, or a machine
	// has volumes of more than one slot of an etcd cluster.
	ErrAmbiguous = errors.New("more than one volume found")
	// ErrWrongIdentity: the volume belongs to another slot or cluster.
	ErrWrongIdentity = errors.New("volume belongs to another member")
)

// Selector names an etcd member slot: the volume wanted, or carried.
type Selector struct {
	// Cluster is the Kubernetes cluster name.
	Cluster string `json:"cluster"`
	// EtcdCluster is the etcd cluster: main, events.
	EtcdCluster string `json:"etcdCluster"`
	// Slot is the member slot (SlotName), also the etcd member name and
	// etcd-manager's identity.
	Slot string `json:"slot"`
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$`)

// slotRE is what etcd-manager accepts as an identity (a DNS label).
var slotRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Validate reports every invalid field by name.
func (s Selector) Validate() error {
	var errs []error
	for _, f := range []struct{ name, v string }{
		{"cluster", s.Cluster}, {"etcdCluster", s.EtcdCluster},
	} {
		if !nameRE.MatchString(f.v) {
			errs = append(errs, fmt.Errorf("volume selector %s: %q is not a valid name (letters, digits, '.', '_', '-', at most 253)", f.name, f.v))
		}
	}
	if !slotRE.MatchString(s.Slot) {
		errs = append(errs, fmt.Errorf("volume selector slot: %q is not a valid slot name (a DNS label such as main-1)", s.Slot))
	}
	return errors.Join(errs...)
}

// String names the member in errors and logs.
func (s Selector) String() string {
	return fmt.Sprintf("cluster=%s etcdCluster=%s slot=%s", s.Cluster, s.EtcdCluster, s.Slot)
}

// Label is the ext4 label (at most 16 bytes) of the slot's volume:
// LabelPrefix and the first 8 hex digits of a hash of the identity.
func (s Selector) Label() string {
	h := sha256.Sum256([]byte(s.Cluster + "\x00" + s.EtcdCluster + "\x00" + s.Slot))
	return LabelPrefix + hex.EncodeToString(h[:])[:8]
}

// SlotName is the name of slot n (1-based) of an etcd cluster:
// "<etcdCluster>-<n>". pkg/config keeps etcd cluster names short enough
// for it to be a DNS label.
func SlotName(etcdCluster string, n int) string { return fmt.Sprintf("%s-%d", etcdCluster, n) }

// SlotNames are the slots of an etcd cluster of members members.
func SlotNames(etcdCluster string, members int) []string {
	out := make([]string, 0, members)
	for i := 1; i <= members; i++ {
		out = append(out, SlotName(etcdCluster, i))
	}
	return out
}

// Identity is the content of the identity file.
type Identity struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Selector
	// FormattedAt (RFC 3339) and Device are for humans only.
	FormattedAt string `json:"formattedAt,omitempty"`
	Device      string `json:"device,omitempty"`
}

// NewIdentity returns the identity written to a volume of the member.
func NewIdentity(sel Selector, formattedAt, device string) Identity {
	return Identity{APIVersion: IdentityAPIVersion, Kind: IdentityKind, Selector: sel, FormattedAt: formattedAt, Device: device}
}

// Marshal encodes the identity file.
func (id Identity) Marshal() []byte {
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil { // cannot happen: only strings
		return nil
	}
	return append(b, '\n')
}

// ParseIdentity decodes an identity file read from where (named in errors).
func ParseIdentity(where string, b []byte) (Identity, error) {
	var id Identity
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&id); err != nil {
		return Identity{}, fmt.Errorf("parsing volume identity %s: %w", where, err)
	}
	if id.APIVersion != IdentityAPIVersion || id.Kind != IdentityKind {
		return Identity{}, fmt.Errorf("parsing volume identity %s: apiVersion %q kind %q, want %q %q", where, id.APIVersion, id.Kind, IdentityAPIVersion, IdentityKind)
	}
	if err := id.Selector.Validate(); err != nil {
		return Identity{}, fmt.Errorf("parsing volume identity %s: %w", where, err)
	}
	return id, nil
}

// AttachmentState says where a volume is attached.
type AttachmentState string

// Attachment states.
const (
	// NotAttached: attached to no machine (a cloud volume that is free).
	NotAttached AttachmentState = "none"
	// AttachedHere: attached to this machine (always, for metal disks).
	AttachedHere AttachmentState = "here"
	// AttachedElsewhere: attached to another machine.
	AttachedElsewhere AttachmentState = "elsewhere"
)

// Attachment is where a volume is attached.
type Attachment struct {
	State AttachmentState `json:"state"`
	// Instance is the machine it is attached to, when elsewhere (a cloud
	// instance ID).
	Instance string `json:"instance,omitempty"`
	// InstanceRunning: the machine it is attached to elsewhere is running.
	// Such a volume is never taken; one attached to a stopped or
	// terminated machine may be detached and adopted.
	InstanceRunning bool `json:"instanceRunning,omitempty"`
}

// Volume is a volume a provider found or created.
type Volume struct {
	// ID is the provider's name for the volume (a cloud volume ID; for
	// metal the device path).
	ID string `json:"id"`
	// Device is the block device path when already known (metal); a
	// cloud provider learns it from Attach.
	Device string `json:"device,omitempty"`
	// Label is the filesystem label seen when listing, if any.
	Label string `json:"label,omitempty"`
	// Slot is the member slot the volume carries (its identity file or
	// its tags); empty for a volume not yet claimed: a blank metal disk
	// configured for the etcd cluster.
	Slot       string     `json:"slot,omitempty"`
	Attachment Attachment `json:"attachment"`
	// Unreachable says why this machine can never attach the volume (for
	// example "in zone us-east-1b, this machine in us-east-1a"); empty
	// when it can. Such a volume is never adopted here, but its slot
	// stays taken.
	Unreachable string `json:"unreachable,omitempty"`
}

// ErrNotSupported is returned by providers for operations they cannot do
// (metal cannot create or detach disks).
var ErrNotSupported = errors.New("not supported by this volume provider")

// Provider lists, creates, attaches and detaches the volumes of etcd
// members. One folder per implementation (volumes/metal, volumes/aws); the
// node configuration's volume.provider chooses.
type Provider interface {
	// List returns the volumes of one etcd cluster of the cluster that the
	// provider can see: those carrying a slot of it (Slot set), wherever
	// attached, and volumes set aside for a new member (Slot empty: a
	// metal disk chosen by the configuration). Volumes of other clusters or
	// etcd clusters are left out.
	List(ctx context.Context, cluster, etcdCluster string) ([]Volume, error)
	// Create makes a new volume for the slot (sel) with the configured
	// size, type and IOPS, tagged with the slot, in this machine's zone.
	// ErrNotSupported on metal.
	Create(ctx context.Context, sel Selector, spec config.VolumeSpec) (Volume, error)
	// Attach makes the volume a block device on this machine and returns
	// its path; the device may appear later (Ensure waits for it). It
	// fails for a volume attached to another running machine. For metal it
	// returns the device path.
	Attach(ctx context.Context, v Volume) (devicePath string, err error)
	// Detach detaches the volume from the machine it is attached to (a
	// stopped or terminated one, before adopting it). ErrNotSupported on
	// metal. Never called for a mounted volume.
	Detach(ctx context.Context, v Volume) error
}
