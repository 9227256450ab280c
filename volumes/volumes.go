// Package volumes finds, attaches, safely formats and mounts the volume of an
// etcd member. A volume is bound to an etcd member identity (cluster, etcd
// cluster, member), written into the filesystem when it is formatted, so two
// nodes cannot swap volumes. Providers (one folder each, e.g. volumes/local)
// find and attach volumes; Ensure ties the steps together.
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
)

// IdentityFileName is the file at the root of every volume's filesystem that
// names the member the volume belongs to. It is written by mkfs itself
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
	// ErrNotFound: the provider knows no volume for the member.
	ErrNotFound = errors.New("no volume found")
	// ErrAmbiguous: more than one volume claims the member.
	ErrAmbiguous = errors.New("more than one volume found")
	// ErrWrongIdentity: the volume belongs to another member or cluster.
	ErrWrongIdentity = errors.New("volume belongs to another member")
)

// Selector names the etcd member whose volume is wanted.
type Selector struct {
	// Cluster is the Kubernetes cluster name.
	Cluster string `json:"cluster"`
	// EtcdCluster is the etcd cluster: main, events.
	EtcdCluster string `json:"etcdCluster"`
	// Member is the etcd member's name within its etcd cluster.
	Member string `json:"member"`
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$`)

// Validate reports every invalid field by name.
func (s Selector) Validate() error {
	var errs []error
	for _, f := range []struct{ name, v string }{
		{"cluster", s.Cluster}, {"etcdCluster", s.EtcdCluster}, {"member", s.Member},
	} {
		if !nameRE.MatchString(f.v) {
			errs = append(errs, fmt.Errorf("volume selector %s: %q is not a valid name (letters, digits, '.', '_', '-', at most 253)", f.name, f.v))
		}
	}
	return errors.Join(errs...)
}

// String names the member in errors and logs.
func (s Selector) String() string {
	return fmt.Sprintf("cluster=%s etcdCluster=%s member=%s", s.Cluster, s.EtcdCluster, s.Member)
}

// Label is the ext4 label (at most 16 bytes) of the member's volume:
// LabelPrefix and the first 8 hex digits of a hash of the identity.
func (s Selector) Label() string {
	h := sha256.Sum256([]byte(s.Cluster + "\x00" + s.EtcdCluster + "\x00" + s.Member))
	return LabelPrefix + hex.EncodeToString(h[:])[:8]
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

// Volume is a volume a provider found.
type Volume struct {
	// ID is the provider's name for the volume (a cloud volume ID; for
	// bare metal the device path).
	ID string
	// Device is the block device path when already known (bare metal); a
	// cloud provider learns it from Attach.
	Device string
	// Label is the filesystem label seen when finding, if any.
	Label string
}

// Provider finds and attaches volumes. One folder per implementation.
type Provider interface {
	// Find returns the volumes that belong to the member, or are meant to
	// (a blank device set aside for it). More than one is an error for Ensure.
	Find(ctx context.Context, sel Selector) ([]Volume, error)
	// Attach makes the volume a block device on this machine and returns its
	// path; the device may appear later (Ensure waits for it). A no-op for
	// bare metal.
	Attach(ctx context.Context, v Volume) (devicePath string, err error)
}
