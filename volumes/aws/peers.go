package aws

import (
	"context"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// SlotPeer is one volume of an etcd cluster that is attached to an
// instance: the slot it carries (the member identity) and where that
// instance is. etcd-manager's aws-volumes discovery makes peers of them.
type SlotPeer struct {
	Slot, VolumeID string
	// Instance holds the volume; InstanceState is its EC2 state (running,
	// stopped, terminated...) and PrivateIP its private IPv4 address (empty
	// when EC2 answers none, as for a terminated instance).
	Instance, InstanceState, PrivateIP string
}

// Running reports whether the holder is running: only then is an
// etcd-manager reachable on it.
func (p SlotPeer) Running() bool { return p.InstanceState == string(types.InstanceStateNameRunning) }

// SlotPeers lists the etcd cluster's volumes that are attached to an
// instance (this one included), sorted by slot then volume ID, with each
// holder's state and private address. Volumes not attached (or only
// detaching) are left out.
func (p *Provider) SlotPeers(ctx context.Context, cluster, etcdCluster string) ([]SlotPeer, error) {
	vols, err := p.ListEBS(ctx, cluster, etcdCluster)
	if err != nil {
		return nil, err
	}
	// ListEBS described the other holders; this instance's own address
	// comes from EC2 too, in one more call only when it holds a volume.
	var self map[string]instanceInfo
	for _, v := range vols {
		if v.Instance == p.instance && self == nil {
			if self, err = p.describeInstances(ctx, []string{p.instance}); err != nil {
				return nil, err
			}
		}
	}
	var out []SlotPeer
	for _, v := range vols {
		if v.Instance == "" || v.AttachState == string(types.VolumeAttachmentStateDetaching) {
			continue
		}
		sp := SlotPeer{Slot: v.Slot, VolumeID: v.ID, Instance: v.Instance, InstanceState: v.InstanceState, PrivateIP: v.PrivateIP}
		if v.Instance == p.instance {
			in := self[p.instance]
			sp.InstanceState, sp.PrivateIP = in.state, in.privateIP
		}
		out = append(out, sp)
	}
	return out, nil
}

// instanceInfo is what DescribeInstances tells of one instance.
type instanceInfo struct{ state, privateIP string }

// describeInstances asks EC2 for the state and private address of ids;
// instances EC2 no longer knows are missing from the map.
func (p *Provider) describeInstances(ctx context.Context, ids []string) (map[string]instanceInfo, error) {
	out := map[string]instanceInfo{}
	pg := ec2.NewDescribeInstancesPaginator(p.ec2, &ec2.DescribeInstancesInput{
		Filters: []types.Filter{{Name: aws.String("instance-id"), Values: ids}},
	})
	for pg.HasMorePages() {
		page, err := pg.NextPage(ctx)
		if err != nil {
			return nil, callError("DescribeInstances", "", "instances "+strings.Join(ids, ", "), err)
		}
		for _, r := range page.Reservations {
			for _, in := range r.Instances {
				if in.State == nil {
					continue
				}
				out[aws.ToString(in.InstanceId)] = instanceInfo{state: string(in.State.Name), privateIP: aws.ToString(in.PrivateIpAddress)}
			}
		}
	}
	return out, nil
}
