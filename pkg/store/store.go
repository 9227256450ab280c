// Package store defines the state store: the bucket (or directory) from which
// every node reads its configuration and in which control-plane nodes
// coordinate. One interface serves every backend; backends live in their own
// subpackages (file, s3, gcs) and are opened by URL through package storeurl.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Version identifies one written version of an object: an ETag, a GCS
// generation, or a backend-specific token for files. It is opaque to callers;
// the only operations on it are equality and passing it back as a condition.
type Version string

// Info describes a stored object.
type Info struct {
	// Key is the object's key relative to the store's root (no leading slash).
	Key      string
	Size     int64
	Version  Version
	Modified time.Time
}

// Condition restricts a write. The zero value writes unconditionally.
type Condition struct {
	// IfAbsent makes the write succeed only when no object exists at the key
	// (create-if-absent). Exactly one of several concurrent writers wins.
	IfAbsent bool
	// IfVersion makes the write succeed only when the current object has this
	// version (compare-and-swap).
	IfVersion Version
}

// Store is the state store. Keys are slash-separated paths relative to the
// store's root, without a leading slash. Every write is atomic: a reader sees
// the old content or the new content, never a partial object.
type Store interface {
	// URL returns the store's URL, for messages.
	URL() string
	// Open streams an object. The error wraps ErrNotFound when it is absent.
	Open(ctx context.Context, key string) (io.ReadCloser, Info, error)
	// Stat returns an object's metadata. The error wraps ErrNotFound when absent.
	Stat(ctx context.Context, key string) (Info, error)
	// Put writes an object from r, streaming it, atomically and subject to
	// cond. A failed condition returns an error wrapping ErrPrecondition. If r
	// fails or ctx ends mid-write, nothing is visible at the key.
	Put(ctx context.Context, key string, r io.Reader, cond Condition) (Info, error)
	// List returns every object whose key starts with prefix, recursively,
	// sorted by key.
	List(ctx context.Context, prefix string) ([]Info, error)
	// Delete removes an object, and every version of it on a versioned
	// bucket. Deleting an absent object is not an error.
	Delete(ctx context.Context, key string) error
	// Close releases the backend's resources.
	Close() error
}

// Sentinel errors. Backends wrap them in *Error so callers use errors.Is.
var (
	ErrNotFound     = errors.New("object not found")
	ErrPrecondition = errors.New("precondition failed")
	ErrNoBucket     = errors.New("bucket not found")
	ErrAccessDenied = errors.New("access denied")
)

// Error is an error from a store operation; it names the operation and the
// full URL of the object.
type Error struct {
	Op  string // "open", "stat", "put", "list", "delete"
	URL string // full URL of the object or prefix
	Err error
}

func (e *Error) Error() string { return fmt.Sprintf("%s %s: %v", e.Op, e.URL, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// ReadAll reads a whole object into memory. For small objects (configs, keys).
func ReadAll(ctx context.Context, s Store, key string) ([]byte, Info, error) {
	rc, info, err := s.Open(ctx, key)
	if err != nil {
		return nil, Info{}, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, Info{}, &Error{Op: "read", URL: JoinURL(s.URL(), key), Err: err}
	}
	return b, info, nil
}

// JoinURL joins a store URL and a key for messages.
func JoinURL(base, key string) string {
	if key == "" {
		return base
	}
	if len(base) > 0 && base[len(base)-1] == '/' {
		return base + key
	}
	return base + "/" + key
}

// ContextReader returns a reader that fails with ctx's error once ctx is
// done, so that a streaming write stops at the next read.
func ContextReader(ctx context.Context, r io.Reader) io.Reader { return ctxReader{ctx, r} }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
