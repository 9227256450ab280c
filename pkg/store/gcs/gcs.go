// Package gcs is the state store backend on Google Cloud Storage
// (gs://bucket/prefix), built on cloud.google.com/go/storage. An object's
// version is its generation; create-if-absent and compare-and-swap are
// generation preconditions (ifGenerationMatch=0 and =<generation>), checked
// by the server when the upload is committed. Writes stream through a
// resumable upload in chunks, and an upload that fails or is cancelled is
// never committed, so nothing partial becomes visible.
package gcs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/kopsnode/agents/pkg/store"
)

// DefaultChunkSize is the resumable upload chunk size, and the most a Put
// holds in memory.
const DefaultChunkSize = 8 << 20

// Options configures a GCS store.
type Options struct {
	// Bucket is required; Prefix (without leading or trailing slash) is
	// prepended to every key.
	Bucket string
	Prefix string
	// Endpoint is the URL of a GCS emulator such as fake-gcs-server
	// ("http://127.0.0.1:4443"); requests to it are not authenticated. Empty
	// means Google Cloud Storage with Application Default Credentials, or
	// the emulator that STORAGE_EMULATOR_HOST names (which the client
	// library honours itself).
	Endpoint string
	// ChunkSize is the upload chunk size (default DefaultChunkSize).
	ChunkSize int
	// ChunkRetryDeadline bounds the retries of one chunk (0: the library's
	// default, 32s).
	ChunkRetryDeadline time.Duration
	// ListPageSize is the number of objects per list page (0: the server's
	// default, 1000).
	ListPageSize int
	// ClientOptions are passed to storage.NewClient after the ones above
	// (credentials, an HTTP client).
	ClientOptions []option.ClientOption
	// Logger; nil discards.
	Logger *slog.Logger
}

// Store is a state store in a GCS bucket. It is safe for concurrent use.
type Store struct {
	client    *storage.Client
	bucket    *storage.BucketHandle
	name      string
	prefix    string
	url       string
	chunkSize int
	retryDL   time.Duration
	pageSize  int
	log       *slog.Logger
}

var _ store.Store = (*Store)(nil)

// New makes a store. It sends no request: a missing bucket or refused
// credentials show on the first operation.
func New(ctx context.Context, opts Options) (*Store, error) {
	if opts.Bucket == "" {
		return nil, errors.New("gcs store: no bucket given")
	}
	prefix := strings.Trim(opts.Prefix, "/")
	u := "gs://" + opts.Bucket
	if prefix != "" {
		u += "/" + prefix
		if err := store.ValidatePrefix(prefix); err != nil {
			return nil, fmt.Errorf("gcs store %s: prefix: %w", u, err)
		}
	}
	var copts []option.ClientOption
	if opts.Endpoint != "" {
		copts = append(copts,
			option.WithEndpoint(strings.TrimSuffix(opts.Endpoint, "/")+"/storage/v1/"),
			option.WithoutAuthentication(),
			storage.WithJSONReads())
	}
	copts = append(copts, opts.ClientOptions...)
	client, err := storage.NewClient(ctx, copts...)
	if err != nil {
		return nil, fmt.Errorf("gcs store %s: %w", u, err)
	}
	s := &Store{
		client:    client,
		bucket:    client.Bucket(opts.Bucket),
		name:      opts.Bucket,
		prefix:    prefix,
		url:       u,
		chunkSize: opts.ChunkSize,
		retryDL:   opts.ChunkRetryDeadline,
		pageSize:  opts.ListPageSize,
		log:       opts.Logger,
	}
	if s.chunkSize <= 0 {
		s.chunkSize = DefaultChunkSize
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// URL returns gs://bucket/prefix.
func (s *Store) URL() string { return s.url }

// Bucket returns the bucket name.
func (s *Store) Bucket() string { return s.name }

// ObjectName returns the GCS object name of a store key.
func (s *Store) ObjectName(key string) string {
	if s.prefix == "" {
		return key
	}
	return s.prefix + "/" + key
}

// Client returns the underlying client.
func (s *Store) Client() *storage.Client { return s.client }

// Close closes the client.
func (s *Store) Close() error { return s.client.Close() }

func (s *Store) object(op, key string) (*storage.ObjectHandle, error) {
	if err := store.ValidateKey(key); err != nil {
		return nil, &store.Error{Op: op, URL: store.JoinURL(s.url, key), Err: err}
	}
	return s.bucket.Object(s.ObjectName(key)), nil
}

func (s *Store) info(key string, a *storage.ObjectAttrs) store.Info {
	return store.Info{Key: key, Size: a.Size, Version: version(a.Generation), Modified: a.Updated}
}

func version(gen int64) store.Version { return store.Version(strconv.FormatInt(gen, 10)) }

// Open streams an object.
func (s *Store) Open(ctx context.Context, key string) (io.ReadCloser, store.Info, error) {
	o, err := s.object("open", key)
	if err != nil {
		return nil, store.Info{}, err
	}
	r, err := o.NewReader(ctx)
	if err != nil {
		return nil, store.Info{}, s.wrap(ctx, "open", key, err)
	}
	return r, store.Info{Key: key, Size: r.Attrs.Size, Version: version(r.Attrs.Generation), Modified: r.Attrs.LastModified}, nil
}

// Stat returns an object's metadata.
func (s *Store) Stat(ctx context.Context, key string) (store.Info, error) {
	o, err := s.object("stat", key)
	if err != nil {
		return store.Info{}, err
	}
	a, err := o.Attrs(ctx)
	if err != nil {
		return store.Info{}, s.wrap(ctx, "stat", key, err)
	}
	return s.info(key, a), nil
}

// Put streams r into a resumable upload carrying the condition as a
// generation precondition. If r fails or ctx ends, the upload is cancelled
// and never committed.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, cond store.Condition) (store.Info, error) {
	o, err := s.object("put", key)
	if err != nil {
		return store.Info{}, err
	}
	switch {
	case cond.IfAbsent:
		o = o.If(storage.Conditions{DoesNotExist: true})
	case cond.IfVersion != "":
		gen, err := strconv.ParseInt(string(cond.IfVersion), 10, 64)
		if err != nil || gen <= 0 {
			return store.Info{}, &store.Error{Op: "put", URL: store.JoinURL(s.url, key),
				Err: fmt.Errorf("%w: version %q is not a GCS generation", store.ErrPrecondition, cond.IfVersion)}
		}
		o = o.If(storage.Conditions{GenerationMatch: gen})
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := o.NewWriter(wctx)
	w.ChunkSize = s.chunkSize
	if s.retryDL > 0 {
		w.ChunkRetryDeadline = s.retryDL
	}
	if _, err := io.Copy(w, store.ContextReader(ctx, r)); err != nil {
		// Cancelling the context is how an upload is abandoned unsaved.
		cancel()
		_ = w.Close()
		return store.Info{}, s.wrap(ctx, "put", key, fmt.Errorf("writing data: %w", err))
	}
	if err := w.Close(); err != nil {
		return store.Info{}, s.wrap(ctx, "put", key, err)
	}
	return s.info(key, w.Attrs()), nil
}

// List returns every object under prefix.
func (s *Store) List(ctx context.Context, prefix string) ([]store.Info, error) {
	if err := store.ValidatePrefix(prefix); err != nil {
		return nil, &store.Error{Op: "list", URL: store.JoinURL(s.url, prefix), Err: err}
	}
	q := &storage.Query{Prefix: s.ObjectName(prefix)}
	if s.prefix != "" && prefix == "" {
		q.Prefix = s.prefix + "/"
	}
	if err := q.SetAttrSelection([]string{"Name", "Size", "Generation", "Updated"}); err != nil {
		return nil, &store.Error{Op: "list", URL: store.JoinURL(s.url, prefix), Err: err}
	}
	it := s.bucket.Objects(ctx, q)
	if s.pageSize > 0 {
		it.PageInfo().MaxSize = s.pageSize
	}
	var out []store.Info
	for {
		a, err := it.Next()
		if err == iterator.Done {
			break
		}
		if err != nil {
			return nil, s.wrap(ctx, "list", prefix, err)
		}
		k := a.Name
		if s.prefix != "" {
			k = strings.TrimPrefix(k, s.prefix+"/")
		}
		out = append(out, s.info(k, a))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete removes every generation of the object (the live one and, on a
// bucket with object versioning, the noncurrent ones).
func (s *Store) Delete(ctx context.Context, key string) error {
	o, err := s.object("delete", key)
	if err != nil {
		return err
	}
	name := s.ObjectName(key)
	it := s.bucket.Objects(ctx, &storage.Query{Prefix: name, Versions: true})
	var gens []int64
	for {
		a, err := it.Next()
		if err == iterator.Done {
			break
		}
		if err != nil {
			return s.wrap(ctx, "delete", key, err)
		}
		if a.Name == name {
			gens = append(gens, a.Generation)
		}
	}
	for _, g := range gens {
		err := o.Generation(g).Delete(ctx)
		if err != nil && !errors.Is(err, storage.ErrObjectNotExist) {
			return s.wrap(ctx, "delete", key, fmt.Errorf("deleting generation %d: %w", g, err))
		}
	}
	return nil
}

func httpCode(err error) int {
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		return ge.Code
	}
	return 0
}

// wrap turns a client error into a *store.Error naming the object's URL and
// wrapping the store's sentinel error for it.
func (s *Store) wrap(ctx context.Context, op, key string, err error) error {
	var k error
	switch {
	case errors.Is(err, storage.ErrBucketNotExist):
		k = store.ErrNoBucket
	case errors.Is(err, storage.ErrObjectNotExist), httpCode(err) == http.StatusNotFound:
		k = store.ErrNotFound
		if s.bucketMissing(ctx) {
			k = store.ErrNoBucket
		}
	case httpCode(err) == http.StatusPreconditionFailed, httpCode(err) == http.StatusConflict && op == "put":
		k = store.ErrPrecondition
	case httpCode(err) == http.StatusForbidden, httpCode(err) == http.StatusUnauthorized:
		k = store.ErrAccessDenied
	}
	if k != nil {
		err = fmt.Errorf("%w: %w", k, err)
	}
	return &store.Error{Op: op, URL: store.JoinURL(s.url, key), Err: err}
}

func (s *Store) bucketMissing(ctx context.Context) bool {
	_, err := s.bucket.Attrs(ctx)
	return errors.Is(err, storage.ErrBucketNotExist)
}
