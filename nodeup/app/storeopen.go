package app

import (
	"context"

	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/storeurl"
)

// DefaultStoreOpener opens the store by URL through storeurl, with the
// endpoint settings of the environment overridden by the boot configuration
// (the same rule every daemon applies to its --store-* flags).
func DefaultStoreOpener(ctx context.Context, bc BootConfig) (store.Store, error) {
	return bc.StoreSettings().Open(ctx)
}

// StoreSettings are the boot configuration's store settings.
func (c BootConfig) StoreSettings() storeurl.Settings {
	return storeurl.Settings{URL: c.Store, Endpoint: c.StoreEndpoint, Region: c.StoreRegion, PathStyle: c.StorePathStyle}
}
