package runconfig

import (
	"context"
	"fmt"
	"net/url"
	"sync"

	"github.com/kopsnode/agents/etcd-manager/discovery"
	"github.com/kopsnode/agents/pkg/config"
	awsvol "github.com/kopsnode/agents/volumes/aws"
)

// validateAWS checks the aws-volumes settings, naming the flag.
func validateAWS(a config.AWSVolumeSpec) []error {
	var errs []error
	for _, f := range []struct{ flag, v string }{{"--aws-ec2-endpoint", a.EC2Endpoint}, {"--aws-imds-endpoint", a.IMDSEndpoint}} {
		if f.v == "" {
			continue
		}
		if u, err := url.Parse(f.v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("%s: %q is not an http:// or https:// URL", f.flag, f.v))
		}
	}
	return errs
}

// awsVolumeLister lists the etcd cluster's attached EBS volumes. The
// provider asks the instance metadata service for the region when
// --aws-region is empty, so it is made on the first listing (and again
// after a failure), inside the reconcile loop that retries, not when the
// command starts.
type awsVolumeLister struct {
	spec                 config.AWSVolumeSpec
	cluster, etcdCluster string

	mu sync.Mutex // guards p
	p  *awsvol.Provider
}

func (l *awsVolumeLister) provider(ctx context.Context) (*awsvol.Provider, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.p == nil {
		p, err := awsvol.New(ctx, l.spec, awsvol.Options{})
		if err != nil {
			return nil, err
		}
		l.p = p
	}
	return l.p, nil
}

// List returns the volumes as discovery's VolumeHolders.
func (l *awsVolumeLister) List(ctx context.Context) ([]discovery.VolumeHolder, error) {
	p, err := l.provider(ctx)
	if err != nil {
		return nil, err
	}
	sps, err := p.SlotPeers(ctx, l.cluster, l.etcdCluster)
	if err != nil {
		return nil, err
	}
	out := make([]discovery.VolumeHolder, 0, len(sps))
	for _, sp := range sps {
		out = append(out, discovery.VolumeHolder{Slot: sp.Slot, VolumeID: sp.VolumeID, Instance: sp.Instance, PrivateIP: sp.PrivateIP, Running: sp.Running()})
	}
	return out, nil
}
