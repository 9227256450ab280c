package backup

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/store"
)

const (
	deltaFolder = "delta"
	segmentFile = "segment.gz"
	// KindDelta is a delta segment.
	KindDelta = "delta"
	// revDigits is the fixed width of revisions in segment names, so that
	// names sort by revision.
	revDigits = 20
)

var segNameRE = regexp.MustCompile(`^(\d{20})-(\d{20})$`)

// DeltaPrefix is the folder of delta segments, with a trailing slash.
func DeltaPrefix(l control.Layout) string {
	return path.Join(l.BackupsPrefix(), deltaFolder) + "/"
}

// SegmentName is the name (folder) of the segment covering revisions
// first to last, both included.
func SegmentName(first, last int64) string {
	return fmt.Sprintf("%0*d-%0*d", revDigits, first, revDigits, last)
}

// ParseSegmentName returns the revision range a segment name covers.
func ParseSegmentName(name string) (first, last int64, err error) {
	m := segNameRE.FindStringSubmatch(name)
	if m == nil {
		return 0, 0, fmt.Errorf("segment name %q is not of the form <first revision, 20 digits>-<last revision, 20 digits>", name)
	}
	first, _ = strconv.ParseInt(m[1], 10, 64)
	last, _ = strconv.ParseInt(m[2], 10, 64)
	if first <= 0 || last < first {
		return 0, 0, fmt.Errorf("segment name %q: revisions %d to %d are not a range", name, first, last)
	}
	return first, last, nil
}

// SegmentDataKey is the stored (gzip) events of segment name.
func SegmentDataKey(l control.Layout, name string) string {
	return path.Join(l.BackupsPrefix(), deltaFolder, name, segmentFile)
}

// SegmentMetaKey is the meta object of segment name.
func SegmentMetaKey(l control.Layout, name string) string {
	return path.Join(l.BackupsPrefix(), deltaFolder, name, metaFile)
}

// Event is one change of one key at one revision, as a segment stores it
// (one JSON object per line, gzip compressed).
type Event struct {
	Revision int64  `json:"rev"`
	Type     string `json:"type"` // EventPut or EventDelete
	Key      []byte `json:"key"`
	Value    []byte `json:"value,omitempty"`
	Lease    int64  `json:"lease,omitempty"`
	// CreateRevision, ModRevision and Version are the key's, as etcd
	// reported them with the event (for checks; a replay cannot set them).
	CreateRevision int64 `json:"create,omitempty"`
	ModRevision    int64 `json:"mod,omitempty"`
	Version        int64 `json:"ver,omitempty"`
	// Observed is when the writer received the event from etcd's watch, in
	// Unix nanoseconds: the time a point-in-time restore goes by.
	Observed int64 `json:"t"`
}

// Event types.
const (
	EventPut    = "put"
	EventDelete = "delete"
)

// Link is a segment's reference to what it continues: the previous
// segment's last revision and stored sha256, or, for the first segment of
// a chain, the full backup's revision and an empty hash.
type Link struct {
	LastRevision int64  `json:"lastRevision"`
	StoredSHA256 string `json:"storedSHA256,omitempty"`
	Segment      string `json:"segment,omitempty"`
}

// SegmentMeta describes one delta segment. It is written after the data
// object, create-if-absent: its presence means the data object is complete.
type SegmentMeta struct {
	FormatVersion int    `json:"formatVersion"`
	Name          string `json:"name"`
	Kind          string `json:"kind"`
	Object        string `json:"object"`
	Compression   string `json:"compression"`
	// FirstRevision and LastRevision are the revisions the segment covers,
	// both included: every event of every revision in the range is in it.
	FirstRevision int64 `json:"firstRevision"`
	LastRevision  int64 `json:"lastRevision"`
	Events        int64 `json:"events"`
	// FirstEventTime and LastEventTime are when the writer received the
	// first and last event from etcd's watch.
	FirstEventTime time.Time `json:"firstEventTime"`
	LastEventTime  time.Time `json:"lastEventTime"`
	// Size is the uncompressed size; StoredSize and StoredSHA256 are of the
	// data object as stored.
	Size         int64  `json:"size"`
	StoredSize   int64  `json:"storedSize"`
	StoredSHA256 string `json:"storedSHA256"`
	// Prev links the segment to what it continues.
	Prev Link `json:"prev"`
	// Base is the full backup the chain started from (its first segment
	// continues that backup's revision).
	Base         string    `json:"base"`
	ClusterToken string    `json:"clusterToken,omitempty"`
	Writer       Writer    `json:"writer"`
	Written      time.Time `json:"written"`
}

// Validate checks the fields a reader relies on, naming them.
func (m SegmentMeta) Validate() error {
	var errs []error
	if m.FormatVersion != FormatVersion {
		errs = append(errs, fmt.Errorf("formatVersion: %d is not %d", m.FormatVersion, FormatVersion))
	}
	if m.Kind != KindDelta {
		errs = append(errs, fmt.Errorf("kind: %q is not %q", m.Kind, KindDelta))
	}
	if m.Compression != CompressionGzip {
		errs = append(errs, fmt.Errorf("compression: %q is not %q", m.Compression, CompressionGzip))
	}
	if first, last, err := ParseSegmentName(m.Name); err != nil {
		errs = append(errs, fmt.Errorf("name: %w", err))
	} else if first != m.FirstRevision || last != m.LastRevision {
		errs = append(errs, fmt.Errorf("firstRevision, lastRevision: %d-%d are not the name's %d-%d", m.FirstRevision, m.LastRevision, first, last))
	}
	if m.Events <= 0 {
		errs = append(errs, fmt.Errorf("events: %d is not positive", m.Events))
	}
	if b, err := hex.DecodeString(m.StoredSHA256); err != nil || len(b) != 32 {
		errs = append(errs, fmt.Errorf("storedSHA256: %q is not a hex sha256", m.StoredSHA256))
	}
	if m.Prev.StoredSHA256 != "" {
		if b, err := hex.DecodeString(m.Prev.StoredSHA256); err != nil || len(b) != 32 {
			errs = append(errs, fmt.Errorf("prev.storedSHA256: %q is not a hex sha256", m.Prev.StoredSHA256))
		}
	}
	if m.Prev.LastRevision != m.FirstRevision-1 {
		errs = append(errs, fmt.Errorf("prev.lastRevision: %d is not firstRevision-1 (%d)", m.Prev.LastRevision, m.FirstRevision-1))
	}
	if m.StoredSize <= 0 {
		errs = append(errs, fmt.Errorf("storedSize: %d is not positive", m.StoredSize))
	}
	if err := ValidateName(m.Base); err != nil {
		errs = append(errs, fmt.Errorf("base: %w", err))
	}
	return errors.Join(errs...)
}

// ReadSegmentMeta reads and validates the meta object of segment name.
func ReadSegmentMeta(ctx context.Context, st store.Store, l control.Layout, name string) (SegmentMeta, error) {
	if _, _, err := ParseSegmentName(name); err != nil {
		return SegmentMeta{}, err
	}
	key := SegmentMetaKey(l, name)
	url := store.JoinURL(st.URL(), key)
	b, _, err := store.ReadAll(ctx, st, key)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return SegmentMeta{}, fmt.Errorf("delta segment %s: no meta object %s: %w", name, url, ErrNoBackup)
		}
		return SegmentMeta{}, fmt.Errorf("reading meta of delta segment %s: %w", name, err)
	}
	var m SegmentMeta
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return SegmentMeta{}, fmt.Errorf("decoding %s: %w", url, err)
	}
	if err := m.Validate(); err != nil {
		return SegmentMeta{}, fmt.Errorf("meta object %s: %w", url, err)
	}
	if m.Name != name {
		return SegmentMeta{}, fmt.Errorf("meta object %s: name: %q is not the folder's name %q", url, m.Name, name)
	}
	if want := SegmentDataKey(l, name); m.Object != want {
		return SegmentMeta{}, fmt.Errorf("meta object %s: object: %q is not %q", url, m.Object, want)
	}
	return m, nil
}

// encodeSegment serialises events (one JSON object per line) and
// compresses them; it returns the stored bytes and the uncompressed size.
func encodeSegment(events []Event) ([]byte, int64, error) {
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	n := &counter{}
	enc := json.NewEncoder(io.MultiWriter(gz, n))
	for i := range events {
		if err := enc.Encode(&events[i]); err != nil {
			return nil, 0, err
		}
	}
	if err := gz.Close(); err != nil {
		return nil, 0, err
	}
	return buf.Bytes(), n.n, nil
}

// maxSegmentStored bounds what a reader loads of one segment: segments
// are written at a few MiB; anything far larger is not one of ours.
const maxSegmentStored = 256 << 20

// ReadSegment fetches segment m's data object, checks its size and sha256
// against the meta before decoding anything, and returns its events,
// checked to lie in the segment's range in revision order.
func ReadSegment(ctx context.Context, st store.Store, m SegmentMeta) ([]Event, error) {
	url := store.JoinURL(st.URL(), m.Object)
	rc, _, err := st.Open(ctx, m.Object)
	if err != nil {
		return nil, fmt.Errorf("reading delta segment %s: %w", m.Name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(store.ContextReader(ctx, rc), maxSegmentStored+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", url, err)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != m.StoredSHA256 || int64(len(b)) != m.StoredSize {
		return nil, fmt.Errorf("%w: delta segment object %s has sha256 %s (%d bytes) but its meta says %s (%d bytes)", ErrIntegrity, url, got, len(b), m.StoredSHA256, m.StoredSize)
	}
	gz, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("decompressing %s: %w", url, err)
	}
	var events []Event
	sc := bufio.NewScanner(gz)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	line := 0
	prev := m.FirstRevision
	for sc.Scan() {
		line++
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("%s: event %d: %w", url, line, err)
		}
		switch {
		case e.Type != EventPut && e.Type != EventDelete:
			return nil, fmt.Errorf("%s: event %d: type %q is neither %q nor %q", url, line, e.Type, EventPut, EventDelete)
		case e.Revision < prev || e.Revision > m.LastRevision:
			return nil, fmt.Errorf("%s: event %d: revision %d is out of order or outside %d-%d", url, line, e.Revision, m.FirstRevision, m.LastRevision)
		case len(e.Key) == 0:
			return nil, fmt.Errorf("%s: event %d: empty key", url, line)
		}
		prev = e.Revision
		events = append(events, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("decompressing %s: %w", url, err)
	}
	if int64(len(events)) != m.Events {
		return nil, fmt.Errorf("%s: %d events but its meta says %d", url, len(events), m.Events)
	}
	return events, nil
}

// writeSegment stores one segment: the data object, then the meta object,
// both create-if-absent. A data object already there with the same bytes
// (an earlier attempt whose answer was lost) is taken as written; with
// other bytes, or a meta object already there, the range was written by
// another writer and the error wraps ErrOtherWriter.
func writeSegment(ctx context.Context, st store.Store, l control.Layout, m SegmentMeta, data []byte) error {
	url := store.JoinURL(st.URL(), m.Object)
	if _, err := st.Put(ctx, m.Object, bytes.NewReader(data), store.Condition{IfAbsent: true}); err != nil {
		if !errors.Is(err, store.ErrPrecondition) {
			return fmt.Errorf("writing %s: %w", url, err)
		}
		have, _, rerr := store.ReadAll(ctx, st, m.Object)
		if rerr != nil {
			return fmt.Errorf("reading back %s: %w", url, rerr)
		}
		if !bytes.Equal(have, data) {
			return fmt.Errorf("%w: %s already holds other data", ErrOtherWriter, url)
		}
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	key := SegmentMetaKey(l, m.Name)
	if _, err := st.Put(ctx, key, bytes.NewReader(b), store.Condition{IfAbsent: true}); err != nil {
		if errors.Is(err, store.ErrPrecondition) {
			return fmt.Errorf("%w: %s already exists", ErrOtherWriter, store.JoinURL(st.URL(), key))
		}
		return fmt.Errorf("writing %s: %w", store.JoinURL(st.URL(), key), err)
	}
	return nil
}

// ErrOtherWriter is wrapped by errors about a segment that another writer
// (a leader of another term) wrote first.
var ErrOtherWriter = errors.New("another writer continues the delta chain")

// splitSegmentKey returns the segment name and file of a key under
// DeltaPrefix.
func splitSegmentKey(l control.Layout, key string) (name, file string, ok bool) {
	rest, ok := strings.CutPrefix(key, DeltaPrefix(l))
	if !ok {
		return "", "", false
	}
	name, file, ok = strings.Cut(rest, "/")
	if !ok || strings.Contains(file, "/") {
		return "", "", false
	}
	return name, file, true
}
