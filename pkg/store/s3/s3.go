// Package s3 is the state store backend on Amazon S3 and S3-compatible
// servers (s3://bucket/prefix), built on aws-sdk-go-v2. Writes stream in
// parts of a fixed size (a single PutObject for small objects, a multipart
// upload otherwise); create-if-absent and compare-and-swap are S3 conditional
// writes (If-None-Match: * and If-Match: <etag>) on PutObject or
// CompleteMultipartUpload, so an object becomes visible only whole.
package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/kopsnode/agents/pkg/store"
)

const (
	// DefaultPartSize is the size of the parts a large object is uploaded
	// in, and the most a Put holds in memory.
	DefaultPartSize = 8 << 20
	// MinPartSize is S3's smallest part (except the last).
	MinPartSize = 5 << 20
	// DefaultRegion is used when neither the options nor the AWS
	// configuration name one.
	DefaultRegion = "us-east-1"
)

// Options configures an S3 store.
type Options struct {
	// Bucket is required; Prefix (without leading or trailing slash) is
	// prepended to every key.
	Bucket string
	Prefix string
	// Endpoint is the URL of an S3-compatible server ("http://127.0.0.1:9000");
	// empty means AWS.
	Endpoint string
	// Region overrides the region from the AWS configuration (AWS_REGION,
	// shared config); when neither names one, DefaultRegion.
	Region string
	// PathStyle addresses buckets as ENDPOINT/BUCKET rather than
	// BUCKET.ENDPOINT, as most S3-compatible servers want.
	PathStyle bool
	// AccessKey and SecretKey (and SessionToken) are static credentials;
	// when empty, the standard AWS credential chain is used (environment,
	// shared files, web identity, ECS/EC2 roles).
	AccessKey, SecretKey, SessionToken string
	// PartSize is the multipart part size (default DefaultPartSize, at least
	// MinPartSize). Objects smaller than this go up in one PutObject.
	PartSize int64
	// ListPageSize is the number of keys per ListObjectsV2 page (default and
	// maximum 1000).
	ListPageSize int32
	// RetryMaxAttempts overrides the SDK's attempts per request (0 keeps the
	// SDK default).
	RetryMaxAttempts int
	// Logger receives warnings such as failed aborts of multipart uploads;
	// nil discards.
	Logger *slog.Logger
}

// Store is a state store in an S3 bucket. It is safe for concurrent use.
type Store struct {
	client    *awss3.Client
	transport *http.Transport
	bucket    string
	prefix    string
	url       string
	partSize  int64
	pageSize  int32
	log       *slog.Logger
}

var _ store.Store = (*Store)(nil)

// New makes a store; it sends no request, so a missing bucket or bad
// credentials show up on the first operation.
func New(ctx context.Context, opts Options) (*Store, error) {
	if opts.Bucket == "" {
		return nil, errors.New("s3 store: no bucket given")
	}
	prefix := strings.Trim(opts.Prefix, "/")
	u := "s3://" + opts.Bucket
	if prefix != "" {
		u += "/" + prefix
	}
	if prefix != "" {
		if err := store.ValidatePrefix(prefix); err != nil {
			return nil, fmt.Errorf("s3 store %s: prefix: %w", u, err)
		}
	}
	s := &Store{
		bucket:   opts.Bucket,
		prefix:   prefix,
		url:      u,
		partSize: opts.PartSize,
		pageSize: opts.ListPageSize,
		log:      opts.Logger,
	}
	if s.partSize == 0 {
		s.partSize = DefaultPartSize
	}
	if s.partSize < MinPartSize {
		return nil, fmt.Errorf("s3 store %s: part size %d is below the S3 minimum %d", u, s.partSize, MinPartSize)
	}
	if s.pageSize <= 0 || s.pageSize > 1000 {
		s.pageSize = 1000
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	loadOpts := []func(*config.LoadOptions) error{
		// Integrity comes from SigV4's payload hash; extra checksums only
		// where an operation requires them keep S3-compatible servers happy.
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	}
	if opts.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(opts.Region))
	}
	if opts.AccessKey != "" || opts.SecretKey != "" {
		loadOpts = append(loadOpts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(opts.AccessKey, opts.SecretKey, opts.SessionToken)))
	}
	if opts.RetryMaxAttempts > 0 {
		loadOpts = append(loadOpts, config.WithRetryMaxAttempts(opts.RetryMaxAttempts))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("s3 store %s: loading AWS configuration: %w", u, err)
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	// Own the transport (a copy of the SDK's, with any AWS_CA_BUNDLE
	// applied) so that Close can drop its idle connections.
	if bc, ok := cfg.HTTPClient.(*awshttp.BuildableClient); ok {
		s.transport = bc.GetTransport()
	} else {
		s.transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	cfg.HTTPClient = &http.Client{Transport: s.transport}
	s.client = awss3.NewFromConfig(cfg, func(o *awss3.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
		o.UsePathStyle = opts.PathStyle
	})
	return s, nil
}

// URL returns s3://bucket/prefix.
func (s *Store) URL() string { return s.url }

// Bucket returns the bucket name.
func (s *Store) Bucket() string { return s.bucket }

// ObjectKey returns the S3 object key of a store key (the prefix joined).
func (s *Store) ObjectKey(key string) string {
	if s.prefix == "" {
		return key
	}
	return s.prefix + "/" + key
}

// Client returns the underlying S3 client.
func (s *Store) Client() *awss3.Client { return s.client }

// Close drops idle connections.
func (s *Store) Close() error {
	s.transport.CloseIdleConnections()
	return nil
}

func (s *Store) objectKey(op, key string) (string, error) {
	if err := store.ValidateKey(key); err != nil {
		return "", &store.Error{Op: op, URL: store.JoinURL(s.url, key), Err: err}
	}
	return s.ObjectKey(key), nil
}

// Open streams an object.
func (s *Store) Open(ctx context.Context, key string) (io.ReadCloser, store.Info, error) {
	k, err := s.objectKey("open", key)
	if err != nil {
		return nil, store.Info{}, err
	}
	out, err := s.client.GetObject(ctx, &awss3.GetObjectInput{Bucket: &s.bucket, Key: &k})
	if err != nil {
		return nil, store.Info{}, s.wrap(ctx, "open", key, err)
	}
	return out.Body, store.Info{
		Key:      key,
		Size:     aws.ToInt64(out.ContentLength),
		Version:  store.Version(aws.ToString(out.ETag)),
		Modified: aws.ToTime(out.LastModified),
	}, nil
}

// Stat returns an object's metadata.
func (s *Store) Stat(ctx context.Context, key string) (store.Info, error) {
	k, err := s.objectKey("stat", key)
	if err != nil {
		return store.Info{}, err
	}
	out, err := s.client.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: &s.bucket, Key: &k})
	if err != nil {
		return store.Info{}, s.wrap(ctx, "stat", key, err)
	}
	return store.Info{
		Key:      key,
		Size:     aws.ToInt64(out.ContentLength),
		Version:  store.Version(aws.ToString(out.ETag)),
		Modified: aws.ToTime(out.LastModified),
	}, nil
}

// Put streams r to the object. Up to PartSize bytes go up in one PutObject;
// more go up as a multipart upload whose completion carries the condition,
// and which is aborted if anything fails, so nothing partial is visible.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, cond store.Condition) (store.Info, error) {
	k, err := s.objectKey("put", key)
	if err != nil {
		return store.Info{}, err
	}
	r = store.ContextReader(ctx, r)
	buf, eof, err := readChunk(r, nil, int(s.partSize))
	if err != nil {
		return store.Info{}, s.wrap(ctx, "put", key, fmt.Errorf("reading data: %w", err))
	}
	var ifMatch, ifNoneMatch *string
	if cond.IfAbsent {
		ifNoneMatch = aws.String("*")
	}
	if cond.IfVersion != "" {
		ifMatch = aws.String(string(cond.IfVersion))
	}
	if eof {
		out, err := s.client.PutObject(ctx, &awss3.PutObjectInput{
			Bucket:        &s.bucket,
			Key:           &k,
			Body:          bytes.NewReader(buf),
			ContentLength: aws.Int64(int64(len(buf))),
			IfMatch:       ifMatch,
			IfNoneMatch:   ifNoneMatch,
		})
		if err != nil {
			return store.Info{}, s.wrap(ctx, "put", key, err)
		}
		return store.Info{Key: key, Size: int64(len(buf)), Version: store.Version(aws.ToString(out.ETag)), Modified: time.Now()}, nil
	}

	created, err := s.client.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: &k})
	if err != nil {
		return store.Info{}, s.wrap(ctx, "put", key, err)
	}
	uploadID := created.UploadId
	completed := false
	defer func() {
		if completed {
			return
		}
		// Abort even when ctx has ended; a failed abort leaves parts that
		// are invisible and that a lifecycle rule or the server cleans up.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, err := s.client.AbortMultipartUpload(actx, &awss3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: &k, UploadId: uploadID}); err != nil {
			s.log.Warn("aborting multipart upload failed", "url", store.JoinURL(s.url, key), "uploadId", aws.ToString(uploadID), "err", err)
		}
	}()
	var parts []types.CompletedPart
	var size int64
	for part := int32(1); len(buf) > 0; part++ {
		out, err := s.client.UploadPart(ctx, &awss3.UploadPartInput{
			Bucket:        &s.bucket,
			Key:           &k,
			UploadId:      uploadID,
			PartNumber:    aws.Int32(part),
			Body:          bytes.NewReader(buf),
			ContentLength: aws.Int64(int64(len(buf))),
		})
		if err != nil {
			return store.Info{}, s.wrap(ctx, "put", key, fmt.Errorf("uploading part %d: %w", part, err))
		}
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(part)})
		size += int64(len(buf))
		if eof {
			break
		}
		buf, eof, err = readChunk(r, buf, int(s.partSize))
		if err != nil {
			return store.Info{}, s.wrap(ctx, "put", key, fmt.Errorf("reading data: %w", err))
		}
	}
	out, err := s.client.CompleteMultipartUpload(ctx, &awss3.CompleteMultipartUploadInput{
		Bucket:          &s.bucket,
		Key:             &k,
		UploadId:        uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
		IfMatch:         ifMatch,
		IfNoneMatch:     ifNoneMatch,
	})
	if err != nil {
		return store.Info{}, s.wrap(ctx, "put", key, err)
	}
	completed = true
	return store.Info{Key: key, Size: size, Version: store.Version(aws.ToString(out.ETag)), Modified: time.Now()}, nil
}

// readChunk reads from r into buf[:0] until it holds limit bytes or r ends
// (eof), growing buf as needed but never beyond limit.
func readChunk(r io.Reader, buf []byte, limit int) ([]byte, bool, error) {
	buf = buf[:0]
	for len(buf) < limit {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(max(2*cap(buf), 64<<10), limit))
			copy(nb, buf)
			buf = nb
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, true, nil
		}
		if err != nil {
			return buf, false, err
		}
	}
	return buf, false, nil
}

// List returns every object under prefix, following every page.
func (s *Store) List(ctx context.Context, prefix string) ([]store.Info, error) {
	if err := store.ValidatePrefix(prefix); err != nil {
		return nil, &store.Error{Op: "list", URL: store.JoinURL(s.url, prefix), Err: err}
	}
	full := prefix
	if s.prefix != "" {
		full = s.prefix + "/" + prefix
	}
	p := awss3.NewListObjectsV2Paginator(s.client, &awss3.ListObjectsV2Input{
		Bucket:  &s.bucket,
		Prefix:  aws.String(full),
		MaxKeys: aws.Int32(s.pageSize),
	})
	var out []store.Info
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, s.wrap(ctx, "list", prefix, err)
		}
		for _, o := range page.Contents {
			k := aws.ToString(o.Key)
			if s.prefix != "" {
				k = strings.TrimPrefix(k, s.prefix+"/")
			}
			out = append(out, store.Info{
				Key:      k,
				Size:     aws.ToInt64(o.Size),
				Version:  store.Version(aws.ToString(o.ETag)),
				Modified: aws.ToTime(o.LastModified),
			})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete removes every version and delete marker of the object, so nothing
// of it remains on a versioned bucket; on an unversioned bucket that is the
// one "null" version.
func (s *Store) Delete(ctx context.Context, key string) error {
	k, err := s.objectKey("delete", key)
	if err != nil {
		return err
	}
	type ver struct{ id *string }
	var vers []ver
	p := awss3.NewListObjectVersionsPaginator(s.client, &awss3.ListObjectVersionsInput{Bucket: &s.bucket, Prefix: &k})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			if code(err) == "NotImplemented" {
				// A server without versions: a plain delete is all there is.
				if _, err := s.client.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: &s.bucket, Key: &k}); err != nil {
					return s.wrap(ctx, "delete", key, err)
				}
				return nil
			}
			return s.wrap(ctx, "delete", key, err)
		}
		for _, v := range page.Versions {
			if aws.ToString(v.Key) == k {
				vers = append(vers, ver{v.VersionId})
			}
		}
		for _, m := range page.DeleteMarkers {
			if aws.ToString(m.Key) == k {
				vers = append(vers, ver{m.VersionId})
			}
		}
	}
	for _, v := range vers {
		if _, err := s.client.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: &s.bucket, Key: &k, VersionId: v.id}); err != nil {
			return s.wrap(ctx, "delete", key, fmt.Errorf("deleting version %s: %w", aws.ToString(v.id), err))
		}
	}
	return nil
}

// code returns the S3 error code of err, or "".
func code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func status(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// kind maps an S3 error to the store's sentinel error, or nil.
func kind(err error) error {
	switch code(err) {
	case "NoSuchKey", "NoSuchVersion":
		return store.ErrNotFound
	case "NoSuchBucket":
		return store.ErrNoBucket
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden",
		"AllAccessDisabled", "InvalidToken", "ExpiredToken", "InvalidSecurity":
		return store.ErrAccessDenied
	case "PreconditionFailed", "ConditionalRequestConflict":
		return store.ErrPrecondition
	}
	switch status(err) {
	case http.StatusNotFound:
		return store.ErrNotFound
	case http.StatusForbidden, http.StatusUnauthorized:
		return store.ErrAccessDenied
	case http.StatusPreconditionFailed:
		return store.ErrPrecondition
	}
	return nil
}

// wrap turns an SDK error into a *store.Error naming the object's URL and
// wrapping the matching sentinel error. A bare 404 (HEAD responses have no
// error code) is checked against the bucket so a missing bucket is reported
// as such.
func (s *Store) wrap(ctx context.Context, op, key string, err error) error {
	k := kind(err)
	if errors.Is(k, store.ErrNotFound) && code(err) != "NoSuchKey" && s.bucketMissing(ctx) {
		k = store.ErrNoBucket
	}
	if op == "put" && errors.Is(k, store.ErrNotFound) {
		// S3 answers If-Match on an absent object with 404 NoSuchKey.
		return &store.Error{Op: op, URL: store.JoinURL(s.url, key), Err: fmt.Errorf("%w: object is absent: %w", store.ErrPrecondition, err)}
	}
	if k != nil {
		err = fmt.Errorf("%w: %w", k, err)
	}
	return &store.Error{Op: op, URL: store.JoinURL(s.url, key), Err: err}
}

func (s *Store) bucketMissing(ctx context.Context) bool {
	_, err := s.client.HeadBucket(ctx, &awss3.HeadBucketInput{Bucket: &s.bucket})
	return err != nil && (code(err) == "NoSuchBucket" || status(err) == http.StatusNotFound)
}
