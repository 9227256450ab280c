// Package identity persists an etcd-manager instance's etcd membership in its
// data directory (<data-dir>/state.json), so that an instance restarted on
// the same volume comes back as the same member. The instance's identity is
// not chosen here: it is the member slot of the volume mounted at the data
// directory (FromVolume: the volume identity file protokube etcd-volumes
// writes when it formats the volume), or --id; state.json records it and a
// mismatch is an error.
package identity

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/kopsnode/agents/volumes"
)

// FileName is the state file's name inside the data directory.
const FileName = "state.json"

// State is what an instance remembers across restarts.
type State struct {
	// ID is the instance's stable identity, also its etcd member name.
	ID string `json:"id"`
	// ClusterToken is the etcd cluster this instance is a member of; empty
	// while idle.
	ClusterToken string `json:"clusterToken,omitempty"`
	// EtcdVersion is the version it last ran.
	EtcdVersion string `json:"etcdVersion,omitempty"`
	// InitialCluster and InitialClusterState are the arguments it joined with
	// ("name=url,..." and "new" or "existing"); etcd ignores them once its
	// data directory holds a member.
	InitialCluster      string `json:"initialCluster,omitempty"`
	InitialClusterState string `json:"initialClusterState,omitempty"`
}

var idPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidateID checks an ID is usable as an etcd member name and DNS label.
func ValidateID(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("instance id %q: must be a DNS label (lower-case letters, digits, '-', at most 63 characters)", id)
	}
	return nil
}

// ErrCorrupt marks a state file that cannot be decoded. Nothing is deleted:
// the operator decides.
var ErrCorrupt = errors.New("corrupt state file")

// Load reads <dir>/state.json. ok is false when it does not exist.
func Load(dir string) (s State, ok bool, err error) {
	p := filepath.Join(dir, FileName)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return State{}, false, nil
	}
	if err != nil {
		return State{}, false, fmt.Errorf("reading %s: %w", p, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return State{}, false, fmt.Errorf("%s: %w: %v (fix or move the file aside; nothing was changed)", p, ErrCorrupt, err)
	}
	if err := ValidateID(s.ID); err != nil {
		return State{}, false, fmt.Errorf("%s: %w: %v (fix or move the file aside; nothing was changed)", p, ErrCorrupt, err)
	}
	return s, true, nil
}

// Save writes <dir>/state.json atomically (temp file, fsync, rename, fsync dir).
func Save(dir string, s State) error {
	if err := ValidateID(s.ID); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, FileName), append(b, '\n'), 0o600)
}

// WriteFileAtomic writes a file so that readers see the old or the new
// content, never a part.
func WriteFileAtomic(p string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(p)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("renaming %s to %s: %w", tmp, p, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// FromVolume returns the member slot named by the volume identity file at
// the root of dataDir (the volume's mount point): the instance's identity.
// The file must name the cluster and etcd cluster given; its absence means
// no volume is mounted there.
func FromVolume(dataDir, cluster, etcdCluster string) (string, error) {
	p := filepath.Join(dataDir, volumes.IdentityFileName)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("no --id given and no volume identity at %s: the data directory is not a volume mounted by protokube etcd-volumes (it starts etcd-manager only after mounting the member's volume)", p)
	}
	if err != nil {
		return "", fmt.Errorf("reading the volume identity: %w", err)
	}
	id, err := volumes.ParseIdentity(p, b)
	if err != nil {
		return "", err
	}
	if id.Cluster != cluster || id.EtcdCluster != etcdCluster {
		return "", fmt.Errorf("%s: the volume belongs to cluster %q etcd cluster %q, not to --cluster-name %q --etcd-cluster %q", p, id.Cluster, id.EtcdCluster, cluster, etcdCluster)
	}
	if err := ValidateID(id.Slot); err != nil {
		return "", fmt.Errorf("%s: slot: %w", p, err)
	}
	return id.Slot, nil
}

// LoadOrCreate loads the state, or creates it with id. A stored ID other
// than id is an error: the data directory belongs to another member.
func LoadOrCreate(dir, id string) (State, error) {
	if err := ValidateID(id); err != nil {
		return State{}, err
	}
	s, ok, err := Load(dir)
	if err != nil {
		return State{}, err
	}
	if ok {
		if s.ID != id {
			return State{}, fmt.Errorf("%s: data directory belongs to instance %q, not %q (the volume's slot or --id); nothing was changed", filepath.Join(dir, FileName), s.ID, id)
		}
		return s, nil
	}
	s = State{ID: id}
	if err := Save(dir, s); err != nil {
		return State{}, err
	}
	return s, nil
}
