package app

import (
	"context"

	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/storeurl"
)

// DefaultStoreOpener opens the store by URL through storeurl, with the
// endpoint settings of the environment overridden by the boot configuration.
func DefaultStoreOpener(ctx context.Context, bc BootConfig) (store.Store, error) {
	opts, err := storeurl.OptionsFromEnv()
	if err != nil {
		return nil, err
	}
	if bc.StoreEndpoint != "" {
		opts.S3Endpoint = bc.StoreEndpoint
		opts.S3PathStyle = true
	}
	if bc.StoreRegion != "" {
		opts.S3Region = bc.StoreRegion
	}
	if bc.StorePathStyle {
		opts.S3PathStyle = true
	}
	return storeurl.Open(ctx, bc.Store, opts)
}
