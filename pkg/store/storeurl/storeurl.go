// Package storeurl opens a state store by URL: file:///path, s3://bucket/prefix
// or gs://bucket/prefix, with the settings for S3-compatible servers and GCS
// emulators taken from Options (which OptionsFromEnv fills from the
// environment).
package storeurl

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/file"
	"github.com/kopsnode/agents/pkg/store/gcs"
	"github.com/kopsnode/agents/pkg/store/s3"
)

// Environment variables read by OptionsFromEnv.
const (
	EnvS3Endpoint  = "S3_ENDPOINT"          // URL of an S3-compatible server
	EnvS3Region    = "S3_REGION"            // region (else AWS_REGION / shared config, else us-east-1)
	EnvS3PathStyle = "S3_FORCE_PATH_STYLE"  // true/false; default true when S3_ENDPOINT is set
	EnvS3AccessKey = "S3_ACCESS_KEY_ID"     // static credentials instead of the AWS chain
	EnvS3SecretKey = "S3_SECRET_ACCESS_KEY" // (both or neither)
	EnvGCSEndpoint = "GCS_ENDPOINT"         // URL of a GCS emulator (STORAGE_EMULATOR_HOST also works)
)

// Options are the settings that a URL does not carry.
type Options struct {
	// S3Endpoint is the URL of an S3-compatible server; empty means AWS.
	S3Endpoint string
	// S3Region overrides the region of the AWS configuration.
	S3Region string
	// S3PathStyle addresses buckets as ENDPOINT/BUCKET.
	S3PathStyle bool
	// S3AccessKey and S3SecretKey are static credentials; empty means the
	// standard AWS credential chain.
	S3AccessKey, S3SecretKey string
	// GCSEndpoint is the URL of a GCS emulator; empty means Google Cloud
	// Storage (or STORAGE_EMULATOR_HOST).
	GCSEndpoint string
	// FileCreateRoot creates a file store's directory when it is missing.
	FileCreateRoot bool
	// Logger is passed to the backend; nil discards.
	Logger *slog.Logger
}

// OptionsFromEnv reads the S3_* and GCS_ENDPOINT variables.
func OptionsFromEnv() (Options, error) { return OptionsFromLookup(os.Getenv) }

// OptionsFromLookup is OptionsFromEnv with the environment given as a
// function, for tests.
func OptionsFromLookup(getenv func(string) string) (Options, error) {
	o := Options{
		S3Endpoint:  getenv(EnvS3Endpoint),
		S3Region:    getenv(EnvS3Region),
		S3AccessKey: getenv(EnvS3AccessKey),
		S3SecretKey: getenv(EnvS3SecretKey),
		GCSEndpoint: getenv(EnvGCSEndpoint),
	}
	o.S3PathStyle = o.S3Endpoint != ""
	if v := getenv(EnvS3PathStyle); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return Options{}, fmt.Errorf("environment variable %s=%q: want true or false", EnvS3PathStyle, v)
		}
		o.S3PathStyle = b
	}
	if (o.S3AccessKey == "") != (o.S3SecretKey == "") {
		return Options{}, fmt.Errorf("environment variables %s and %s must be set together", EnvS3AccessKey, EnvS3SecretKey)
	}
	for name, v := range map[string]string{EnvS3Endpoint: o.S3Endpoint, EnvGCSEndpoint: o.GCSEndpoint} {
		if v == "" {
			continue
		}
		if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return Options{}, fmt.Errorf("environment variable %s=%q: want an http:// or https:// URL", name, v)
		}
	}
	return o, nil
}

// Location is a parsed state store URL.
type Location struct {
	Scheme string // "file", "s3" or "gs"
	Bucket string // s3 and gs
	Path   string // file: the absolute directory; s3 and gs: the key prefix, no slashes around
}

// Parse checks a state store URL. Errors name the URL.
func Parse(raw string) (Location, error) {
	bad := func(format string, args ...any) (Location, error) {
		return Location{}, fmt.Errorf("state store URL %q: %s", raw, fmt.Sprintf(format, args...))
	}
	if raw == "" {
		return bad("empty; want file:///path, s3://bucket/prefix or gs://bucket/prefix")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad("%v", err)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return bad("query parameters and fragments are not supported; use Options or the environment")
	}
	if u.User != nil {
		return bad("credentials in the URL are not supported")
	}
	switch u.Scheme {
	case "file":
		if u.Opaque != "" || (u.Host != "" && u.Host != "localhost") {
			return bad("not an absolute path; write file:///absolute/path")
		}
		if !strings.HasPrefix(u.Path, "/") {
			return bad("not an absolute path; write file:///absolute/path")
		}
		for _, seg := range strings.Split(u.Path, "/") {
			if seg == ".." {
				return bad(`".." in the path`)
			}
		}
		return Location{Scheme: "file", Path: u.Path}, nil
	case "s3", "gs":
		if u.Opaque != "" || u.Host == "" {
			return bad("no bucket; write %s://bucket/prefix", u.Scheme)
		}
		if u.Port() != "" || strings.ContainsAny(u.Host, ":[]") {
			return bad("bucket %q is not a bucket name", u.Host)
		}
		prefix := strings.Trim(u.Path, "/")
		if err := store.ValidatePrefix(prefix); err != nil {
			return bad("prefix: %v", err)
		}
		return Location{Scheme: u.Scheme, Bucket: u.Host, Path: prefix}, nil
	case "":
		return bad("no scheme; want file:///path, s3://bucket/prefix or gs://bucket/prefix")
	default:
		return bad("unknown scheme %q; want file, s3 or gs", u.Scheme)
	}
}

// Open opens the store that rawURL names.
func Open(ctx context.Context, rawURL string, opts Options) (store.Store, error) {
	loc, err := Parse(rawURL)
	if err != nil {
		return nil, err
	}
	switch loc.Scheme {
	case "file":
		return file.New(loc.Path, file.Options{CreateRoot: opts.FileCreateRoot, Logger: opts.Logger})
	case "s3":
		return s3.New(ctx, s3.Options{
			Bucket:    loc.Bucket,
			Prefix:    loc.Path,
			Endpoint:  opts.S3Endpoint,
			Region:    opts.S3Region,
			PathStyle: opts.S3PathStyle,
			AccessKey: opts.S3AccessKey,
			SecretKey: opts.S3SecretKey,
			Logger:    opts.Logger,
		})
	default:
		return gcs.New(ctx, gcs.Options{
			Bucket:   loc.Bucket,
			Prefix:   loc.Path,
			Endpoint: opts.GCSEndpoint,
			Logger:   opts.Logger,
		})
	}
}
