package records

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/kopsnode/agents/gossip/hlc"
)

// Wire format, version 1. Every message is
//
//	magic 'K' | format version 1 | uvarint count | count × record
//
// and a record is
//
//	uvarint len | owner | uvarint len | key | flags (bit 0: deleted) |
//	varint wall | uvarint logical | uvarint len | value
//
// Decoding checks every length against the bytes left and the configured
// limits before it allocates, so a malformed or hostile packet costs at most
// its own size.
const (
	wireMagic   = 'K'
	wireVersion = 1
	flagDeleted = 1
)

var errMalformed = errors.New("malformed records message")

// Limits bound what a decoder accepts.
type Limits struct {
	MaxOwnerLen int
	MaxKeyLen   int
	MaxValueLen int
	// MaxRecords bounds the records in one message.
	MaxRecords int
}

func appendRecord(b []byte, r *Record) []byte {
	b = binary.AppendUvarint(b, uint64(len(r.Owner)))
	b = append(b, r.Owner...)
	b = binary.AppendUvarint(b, uint64(len(r.Key)))
	b = append(b, r.Key...)
	var flags byte
	if r.Deleted {
		flags |= flagDeleted
	}
	b = append(b, flags)
	b = binary.AppendVarint(b, r.Version.Wall)
	b = binary.AppendUvarint(b, uint64(r.Version.Logical))
	b = binary.AppendUvarint(b, uint64(len(r.Value)))
	b = append(b, r.Value...)
	return b
}

// encode returns one message holding recs.
func encode(recs []*Record) []byte {
	n := 8
	for _, r := range recs {
		n += len(r.Owner) + len(r.Key) + len(r.Value) + 24
	}
	b := make([]byte, 0, n)
	b = append(b, wireMagic, wireVersion)
	b = binary.AppendUvarint(b, uint64(len(recs)))
	for _, r := range recs {
		b = appendRecord(b, r)
	}
	return b
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad length", errMalformed)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad number", errMalformed)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(max int, what string) []byte {
	l := d.uvarint()
	if d.err != nil {
		return nil
	}
	if l > uint64(max) {
		d.err = fmt.Errorf("%w: %s of %d bytes exceeds the limit of %d", errMalformed, what, l, max)
		return nil
	}
	if l > uint64(len(d.b)) {
		d.err = fmt.Errorf("%w: %s runs past the end", errMalformed, what)
		return nil
	}
	v := d.b[:l:l]
	d.b = d.b[l:]
	return v
}

func (d *decoder) byte1() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = fmt.Errorf("%w: truncated", errMalformed)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

// decode parses one message. Strings and values are copied, so buf may be
// reused by the caller.
func decode(buf []byte, lim Limits) ([]Record, error) {
	if len(buf) < 2 || buf[0] != wireMagic {
		return nil, fmt.Errorf("%w: bad magic", errMalformed)
	}
	if buf[1] != wireVersion {
		return nil, fmt.Errorf("%w: unknown format version %d", errMalformed, buf[1])
	}
	d := &decoder{b: buf[2:]}
	count := d.uvarint()
	if d.err != nil {
		return nil, d.err
	}
	// Each record takes at least 6 bytes, which bounds count by the buffer.
	if count > uint64(lim.MaxRecords) || count > uint64(len(d.b)/6) {
		return nil, fmt.Errorf("%w: %d records in a message of %d bytes (limit %d)", errMalformed, count, len(buf), lim.MaxRecords)
	}
	out := make([]Record, 0, count)
	for i := uint64(0); i < count; i++ {
		owner := d.bytes(lim.MaxOwnerLen, "owner")
		key := d.bytes(lim.MaxKeyLen, "key")
		flags := d.byte1()
		wall := d.varint()
		logical := d.uvarint()
		value := d.bytes(lim.MaxValueLen, "value")
		if d.err != nil {
			return nil, d.err
		}
		if flags&^flagDeleted != 0 {
			return nil, fmt.Errorf("%w: unknown flags %#x", errMalformed, flags)
		}
		if logical > 1<<32-1 {
			return nil, fmt.Errorf("%w: logical counter out of range", errMalformed)
		}
		r := Record{
			Owner:   string(owner),
			Key:     string(key),
			Deleted: flags&flagDeleted != 0,
			Version: hlc.Timestamp{Wall: wall, Logical: uint32(logical)},
		}
		if len(value) > 0 {
			r.Value = append([]byte(nil), value...)
		}
		out = append(out, r)
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", errMalformed, len(d.b))
	}
	return out, nil
}
