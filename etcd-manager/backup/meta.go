package backup

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/store"
)

// FormatVersion is the version of the meta object's format.
const FormatVersion = 1

// KindFull is a full snapshot.
const KindFull = "full"

// CompressionGzip is the only compression written so far.
const CompressionGzip = "gzip"

// Meta describes one full backup. It is written after the data object,
// so its presence means the data object is complete and was checked.
type Meta struct {
	FormatVersion int    `json:"formatVersion"`
	Name          string `json:"name"`
	Kind          string `json:"kind"`
	// Object is the data object's key, relative to the store's root.
	Object      string `json:"object"`
	Compression string `json:"compression"`

	// EtcdVersion is the server version of the member the snapshot came
	// from; StorageVersion the storage schema version etcd reported with
	// the snapshot (empty from etcd 3.5).
	EtcdVersion    string `json:"etcdVersion"`
	StorageVersion string `json:"storageVersion,omitempty"`
	// Member is the etcd member (name) and Endpoint the client URL the
	// snapshot was streamed from.
	Member   string `json:"member,omitempty"`
	Endpoint string `json:"endpoint"`
	// ClusterToken is the etcd cluster's token (the created marker's).
	ClusterToken string `json:"clusterToken,omitempty"`

	// Revision is the snapshot's revision and KeyCount the number of keys
	// alive at it, both read from the snapshot's database itself.
	Revision        int64 `json:"revision"`
	CompactRevision int64 `json:"compactRevision,omitempty"`
	KeyCount        int64 `json:"keyCount"`
	// DBSize is the database's size and DBSHA256 etcd's own sha256 of it
	// (the 32 bytes etcd appends to the snapshot stream, checked).
	DBSize   int64  `json:"dbSize"`
	DBSHA256 string `json:"dbSHA256"`
	// StoredSize and StoredSHA256 are of the data object as stored
	// (compressed); Read checks them before it hands out any data.
	StoredSize   int64  `json:"storedSize"`
	StoredSHA256 string `json:"storedSHA256"`
	// HashKV is etcd's HashKV of the member the snapshot came from at
	// Revision, asked right after the snapshot; a test restore must give
	// the same (package backup/verify). Absent from metas written before
	// it existed, and when the member did not answer (the backup is good
	// without it).
	HashKV *HashKV `json:"hashKV,omitempty"`

	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Reason says why it was taken: "scheduled", "command <id>", "before
	// removing member m3"...
	Reason string `json:"reason,omitempty"`
	// Spec is the control area's cluster spec when the backup was taken.
	Spec control.Spec `json:"spec"`
	// Writer is the leader term that wrote the backup.
	Writer Writer `json:"writer"`
}

// HashKV is etcd's hash of its key space at a revision (Maintenance.HashKV):
// it covers every key revision up to Revision that compaction at
// CompactRevision keeps, so two members (or a member and a restore of its
// snapshot) with the same history and compaction point have the same hash.
type HashKV struct {
	Hash            uint32 `json:"hash"`
	Revision        int64  `json:"revision"`
	CompactRevision int64  `json:"compactRevision"`
}

// Writer is the identity of the leader term that wrote a backup.
type Writer struct {
	LeaderID   string `json:"leaderID"`
	LeaderTerm int64  `json:"leaderTerm"`
}

// Validate checks the fields a reader relies on, naming them.
func (m Meta) Validate() error {
	var errs []error
	if m.FormatVersion != FormatVersion {
		errs = append(errs, fmt.Errorf("formatVersion: %d is not %d", m.FormatVersion, FormatVersion))
	}
	if err := ValidateName(m.Name); err != nil {
		errs = append(errs, fmt.Errorf("name: %w", err))
	}
	if m.Kind != KindFull {
		errs = append(errs, fmt.Errorf("kind: %q is not %q", m.Kind, KindFull))
	}
	if m.Compression != CompressionGzip {
		errs = append(errs, fmt.Errorf("compression: %q is not %q", m.Compression, CompressionGzip))
	}
	if m.Object == "" {
		errs = append(errs, errors.New("object: empty"))
	}
	for _, h := range []struct{ name, v string }{{"storedSHA256", m.StoredSHA256}, {"dbSHA256", m.DBSHA256}} {
		if b, err := hex.DecodeString(h.v); err != nil || len(b) != 32 {
			errs = append(errs, fmt.Errorf("%s: %q is not a hex sha256", h.name, h.v))
		}
	}
	if m.StoredSize <= 0 {
		errs = append(errs, fmt.Errorf("storedSize: %d is not positive", m.StoredSize))
	}
	if m.Revision <= 0 {
		errs = append(errs, fmt.Errorf("revision: %d is not positive", m.Revision))
	}
	return errors.Join(errs...)
}

// ReadMeta reads and validates the meta object of backup name. A meta
// object that does not parse or validate is an error naming its URL.
func ReadMeta(ctx context.Context, st store.Store, l control.Layout, name string) (Meta, error) {
	if err := ValidateName(name); err != nil {
		return Meta{}, err
	}
	key := MetaKey(l, name)
	b, _, err := store.ReadAll(ctx, st, key)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Meta{}, fmt.Errorf("backup %s: no meta object %s (the backup does not exist or is incomplete): %w", name, store.JoinURL(st.URL(), key), ErrNoBackup)
		}
		return Meta{}, fmt.Errorf("reading meta of backup %s: %w", name, err)
	}
	var m Meta
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Meta{}, fmt.Errorf("decoding %s: %w", store.JoinURL(st.URL(), key), err)
	}
	if err := m.Validate(); err != nil {
		return Meta{}, fmt.Errorf("meta object %s: %w", store.JoinURL(st.URL(), key), err)
	}
	if m.Name != name {
		return Meta{}, fmt.Errorf("meta object %s: name: %q is not the folder's name %q", store.JoinURL(st.URL(), key), m.Name, name)
	}
	if want := DataKey(l, name); m.Object != want {
		return Meta{}, fmt.Errorf("meta object %s: object: %q is not %q", store.JoinURL(st.URL(), key), m.Object, want)
	}
	return m, nil
}

// ErrNoBackup is wrapped by errors about a backup that does not exist.
var ErrNoBackup = errors.New("no such backup")

func writeMeta(ctx context.Context, st store.Store, l control.Layout, m Meta) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	// Create-if-absent: a meta object is never replaced.
	if _, err := st.Put(ctx, MetaKey(l, m.Name), bytes.NewReader(b), store.Condition{IfAbsent: true}); err != nil {
		return fmt.Errorf("writing meta of backup %s: %w", m.Name, err)
	}
	return nil
}
