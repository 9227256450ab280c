package storeurl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"

	"github.com/kopsnode/agents/pkg/store"
)

// Settings are everything a daemon needs to open the state store: its URL
// and the S3 settings that the URL does not carry. Every daemon binds them
// with AddFlags, and nodeup renders them into units with Args, so a unit
// gets the same settings nodeup itself used. Credentials are not settings:
// they come from the environment or the cloud's credential chain, never
// from a command line.
type Settings struct {
	// URL is the store URL (file:///path, s3://bucket/prefix, gs://bucket/prefix).
	URL string
	// Endpoint is the URL of an S3-compatible server; empty means AWS (or
	// the S3_ENDPOINT environment variable). Setting it implies path-style
	// addressing.
	Endpoint string
	// Region is the S3 region; empty means the environment's.
	Region string
	// PathStyle addresses buckets as ENDPOINT/BUCKET.
	PathStyle bool
}

// Flag names, shared by every daemon.
const (
	FlagStore          = "store"
	FlagStoreEndpoint  = "store-endpoint"
	FlagStoreRegion    = "store-region"
	FlagStorePathStyle = "store-path-style"
)

// AddFlags binds the settings to --store, --store-endpoint, --store-region
// and --store-path-style.
func (s *Settings) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&s.URL, FlagStore, s.URL, "state store URL (file:///path, s3://bucket/prefix, gs://bucket/prefix)")
	fs.StringVar(&s.Endpoint, FlagStoreEndpoint, s.Endpoint, "URL of an S3-compatible server (default: AWS, or $"+EnvS3Endpoint+"); implies --"+FlagStorePathStyle)
	fs.StringVar(&s.Region, FlagStoreRegion, s.Region, "S3 region of the store (default: $"+EnvS3Region+" or the AWS configuration)")
	fs.BoolVar(&s.PathStyle, FlagStorePathStyle, s.PathStyle, "address S3 buckets as ENDPOINT/BUCKET")
}

// Args renders the settings as flags, the inverse of AddFlags; unset
// settings are left out.
func (s Settings) Args() []string {
	args := []string{"--" + FlagStore + "=" + s.URL}
	if s.Endpoint != "" {
		args = append(args, "--"+FlagStoreEndpoint+"="+s.Endpoint)
	}
	if s.Region != "" {
		args = append(args, "--"+FlagStoreRegion+"="+s.Region)
	}
	if s.PathStyle {
		args = append(args, "--"+FlagStorePathStyle)
	}
	return args
}

// Validate checks the URL and the endpoint, naming the flag.
func (s Settings) Validate() error {
	var errs []error
	if _, err := Parse(s.URL); err != nil {
		errs = append(errs, fmt.Errorf("--%s: %w", FlagStore, err))
	}
	if s.Endpoint != "" {
		if u, err := url.Parse(s.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--%s: %q is not an http:// or https:// URL", FlagStoreEndpoint, s.Endpoint))
		}
	}
	return errors.Join(errs...)
}

// Options returns the backend options: the environment's (OptionsFromEnv),
// overridden by every setting that is set.
func (s Settings) Options() (Options, error) {
	o, err := OptionsFromEnv()
	if err != nil {
		return Options{}, err
	}
	return s.apply(o), nil
}

func (s Settings) apply(o Options) Options {
	if s.Endpoint != "" {
		o.S3Endpoint = s.Endpoint
		o.S3PathStyle = true
	}
	if s.Region != "" {
		o.S3Region = s.Region
	}
	if s.PathStyle {
		o.S3PathStyle = true
	}
	return o
}

// Open opens the store with Options.
func (s Settings) Open(ctx context.Context) (store.Store, error) {
	o, err := s.Options()
	if err != nil {
		return nil, err
	}
	return Open(ctx, s.URL, o)
}
