package aws

import (
	"context"
	"fmt"

	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/volumes"
)

var _ volumes.Provider = (*Provider)(nil)

// List returns the volumes tagged for the etcd cluster of the cluster that
// carry a valid slot tag, in every zone: a volume in another zone cannot be
// attached here (Unreachable says so, and Attach refuses it with
// ErrWrongZone) but its slot is taken.
// A volume held by another instance says whether that instance runs.
func (p *Provider) List(ctx context.Context, cluster, etcdCluster string) ([]volumes.Volume, error) {
	ebs, err := p.ListEBS(ctx, cluster, etcdCluster)
	if err != nil {
		return nil, err
	}
	out := make([]volumes.Volume, 0, len(ebs))
	for _, v := range ebs {
		sel := volumes.Selector{Cluster: cluster, EtcdCluster: etcdCluster, Slot: v.Slot}
		if err := sel.Validate(); err != nil {
			// Ours by its cluster tags, but not made by this provider: a
			// slot it cannot carry. Left alone, and said so.
			p.log.Warn("ignoring volume with a missing or invalid slot tag", "volume", v.ID, "tag", SlotTag, "value", v.Slot, "err", err)
			continue
		}
		out = append(out, p.toVolume(v))
	}
	return out, nil
}

func (p *Provider) toVolume(v EBSVolume) volumes.Volume {
	out := volumes.Volume{ID: v.ID, Slot: v.Slot, Attachment: volumes.Attachment{State: volumes.NotAttached}}
	if v.Zone != p.zone {
		out.Unreachable = fmt.Sprintf("in zone %s, this instance in %s", v.Zone, p.zone)
	}
	switch {
	case v.Instance == "":
	case p.attachedHere(v):
		out.Attachment.State = volumes.AttachedHere
	default:
		out.Attachment = volumes.Attachment{State: volumes.AttachedElsewhere, Instance: v.Instance, InstanceRunning: holderAlive(v.InstanceState)}
	}
	return out
}

// Create makes the slot's volume in this instance's zone with the size,
// type (default gp3) and IOPS of spec, tagged with the cluster, etcd
// cluster and slot, and waits until it is available.
func (p *Provider) Create(ctx context.Context, sel volumes.Selector, spec config.VolumeSpec) (volumes.Volume, error) {
	if err := sel.Validate(); err != nil {
		return volumes.Volume{}, err
	}
	v, err := p.CreateEBS(ctx, sel.Cluster, sel.EtcdCluster, sel.Slot, VolumeSpec{SizeGiB: spec.SizeGiB, Type: spec.Type, IOPS: spec.IOPS})
	if err != nil {
		return volumes.Volume{}, err
	}
	return p.toVolume(v), nil
}

// Attach attaches the volume to this instance and returns its device once
// it exists (see AttachEBS).
func (p *Provider) Attach(ctx context.Context, v volumes.Volume) (string, error) {
	if v.ID == "" {
		return "", fmt.Errorf("aws volume provider: attach: no volume ID")
	}
	return p.AttachEBS(ctx, v.ID)
}

// Detach detaches the volume from this instance. A volume held by another
// instance is never detached: one whose instance is terminated or shutting
// down is waited on until EC2 releases it; one held by a running or stopped
// instance is an error naming the instance (see DetachEBS).
func (p *Provider) Detach(ctx context.Context, v volumes.Volume) error {
	if v.ID == "" {
		return fmt.Errorf("aws volume provider: detach: no volume ID")
	}
	return p.DetachEBS(ctx, v.ID)
}
