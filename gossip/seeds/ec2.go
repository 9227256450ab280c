package seeds

import (
	"context"
	"fmt"
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// EC2 finds seeds among running EC2 instances carrying every tag in Tags
// (for example KubernetesCluster=<cluster>), at their private addresses.
// It needs ec2:DescribeInstances; workers use Static or Registry instead.
type EC2 struct {
	Client ec2.DescribeInstancesAPIClient
	Tags   map[string]string
	// Port is the gossip port appended to each address.
	Port int
}

// Seeds returns host:port for every matching running instance.
func (e EC2) Seeds(ctx context.Context) ([]string, error) {
	filters := []types.Filter{{Name: aws.String("instance-state-name"), Values: []string{"running"}}}
	keys := make([]string, 0, len(e.Tags))
	for k := range e.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		filters = append(filters, types.Filter{Name: aws.String("tag:" + k), Values: []string{e.Tags[k]}})
	}
	p := ec2.NewDescribeInstancesPaginator(e.Client, &ec2.DescribeInstancesInput{Filters: filters})
	var out []string
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("finding gossip seeds with ec2:DescribeInstances (tags %v): %w", e.Tags, err)
		}
		for _, r := range page.Reservations {
			for _, in := range r.Instances {
				if in.PrivateIpAddress != nil && *in.PrivateIpAddress != "" {
					out = append(out, withPort(*in.PrivateIpAddress, e.Port))
				}
			}
		}
	}
	return out, nil
}
