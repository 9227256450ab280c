package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protowire"
)

// etcd's snapshot stream is the bbolt database followed by the sha256 of
// the database (etcd's maintenanceServer.Snapshot appends it; etcdutl's
// restore checks it when the size modulo 512 is 32). dbSplitter holds back
// the last 32 bytes of what it is given, forwards the rest to out while
// hashing it, and check compares the held-back bytes with that hash.
type dbSplitter struct {
	out  io.Writer
	h    hash.Hash
	tail [sha256.Size]byte
	n    int   // bytes held in tail
	size int64 // bytes forwarded
}

func newDBSplitter(out io.Writer) *dbSplitter {
	return &dbSplitter{out: out, h: sha256.New()}
}

func (d *dbSplitter) Write(p []byte) (int, error) {
	total := len(p)
	// Of tail+p, everything but the last 32 bytes can go out.
	if d.n+len(p) <= sha256.Size {
		copy(d.tail[d.n:], p)
		d.n += len(p)
		return total, nil
	}
	emitFromTail := min(d.n, d.n+len(p)-sha256.Size)
	if emitFromTail > 0 {
		if err := d.emit(d.tail[:emitFromTail]); err != nil {
			return 0, err
		}
		copy(d.tail[:], d.tail[emitFromTail:d.n])
		d.n -= emitFromTail
	}
	if len(p) > sha256.Size-d.n {
		cut := len(p) - (sha256.Size - d.n)
		if err := d.emit(p[:cut]); err != nil {
			return 0, err
		}
		p = p[cut:]
	}
	copy(d.tail[d.n:], p)
	d.n += len(p)
	return total, nil
}

func (d *dbSplitter) emit(p []byte) error {
	d.h.Write(p)
	d.size += int64(len(p))
	_, err := d.out.Write(p)
	return err
}

// ErrIntegrity is wrapped by every hash mismatch: etcd's own snapshot
// hash, or a stored object against its meta.
var ErrIntegrity = errors.New("integrity check failed")

// check compares etcd's appended hash with the hash of the database.
func (d *dbSplitter) check() (dbSHA256 string, err error) {
	if d.n < sha256.Size || d.size == 0 {
		return "", fmt.Errorf("%w: snapshot stream of %d bytes is too short to hold a database and its sha256", ErrIntegrity, d.size+int64(d.n))
	}
	got := d.h.Sum(nil)
	if !bytes.Equal(got, d.tail[:]) {
		return "", fmt.Errorf("%w: etcd's snapshot hash %x does not match the database's sha256 %x (%d bytes)", ErrIntegrity, d.tail[:], got, d.size)
	}
	return hex.EncodeToString(got), nil
}

// DBStatus is what Inspect reads from an etcd database file.
type DBStatus struct {
	// Revision is the store's current revision: the highest revision in
	// the key bucket, or the compaction revision when that is higher
	// (as etcd itself computes it on start).
	Revision        int64
	CompactRevision int64
	// KeyCount is the number of keys alive at Revision.
	KeyCount int64
}

// Inspect opens an etcd v3 database file (a snapshot without its trailing
// hash) read-only and reads its revision and key count.
func Inspect(path string) (DBStatus, error) {
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return DBStatus{}, fmt.Errorf("opening etcd database %s: %w", path, err)
	}
	defer db.Close()
	var st DBStatus
	err = db.View(func(tx *bolt.Tx) error {
		kb := tx.Bucket([]byte("key"))
		if kb == nil {
			return errors.New("no key bucket: not an etcd v3 database")
		}
		// Keys of the key bucket are revisions (8 bytes main, '_', 8
		// bytes sub, and a 't' for a deletion), in revision order; values
		// are mvccpb.KeyValue, whose field 1 is the key.
		alive := map[string]bool{}
		err := kb.ForEach(func(k, v []byte) error {
			if (len(k) != 17 && len(k) != 18) || k[8] != '_' {
				return fmt.Errorf("key bucket entry %x is not a revision", k)
			}
			main := int64(binary.BigEndian.Uint64(k[:8]))
			st.Revision = max(st.Revision, main)
			if len(v) == 0 {
				// `etcdutl snapshot restore --bump-revision` marks the
				// bumped revision with an empty entry: no key.
				return nil
			}
			key, err := kvKey(v)
			if err != nil {
				return fmt.Errorf("revision %d: %w", main, err)
			}
			tomb := len(k) == 18 && k[17] == 't'
			if tomb {
				delete(alive, string(key))
			} else {
				alive[string(key)] = true
			}
			return nil
		})
		if err != nil {
			return err
		}
		st.KeyCount = int64(len(alive))
		if mb := tx.Bucket([]byte("meta")); mb != nil {
			for _, name := range []string{"finishedCompactRev", "scheduledCompactRev"} {
				if v := mb.Get([]byte(name)); len(v) >= 8 {
					r := int64(binary.BigEndian.Uint64(v[:8]))
					st.Revision = max(st.Revision, r)
					if name == "finishedCompactRev" {
						st.CompactRevision = r
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		return DBStatus{}, fmt.Errorf("reading etcd database %s: %w", path, err)
	}
	return st, nil
}

// kvKey returns field 1 (key) of an encoded mvccpb.KeyValue.
func kvKey(b []byte) ([]byte, error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("decoding key-value: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, fmt.Errorf("decoding key-value: %w", protowire.ParseError(n))
			}
			return v, nil
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, fmt.Errorf("decoding key-value: %w", protowire.ParseError(n))
		}
		b = b[n:]
	}
	return nil, errors.New("decoding key-value: no key")
}
