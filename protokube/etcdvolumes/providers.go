package etcdvolumes

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/volumes"
	"github.com/kopsnode/agents/volumes/aws"
)

// newCloudProvider builds the provider named by spec.volume.provider other
// than metal, with its settings from the node configuration.
func newCloudProvider(ctx context.Context, kind string, spec config.NodeConfigSpec, log *slog.Logger) (volumes.Provider, error) {
	switch kind {
	case config.VolumeProviderAWS:
		var c config.AWSVolumeSpec
		if spec.Volume != nil && spec.Volume.AWS != nil {
			c = *spec.Volume.AWS
		}
		return aws.New(ctx, c, aws.Options{Logger: log})
	}
	return nil, fmt.Errorf("provider %q is not a volume provider (metal or aws)", kind)
}
