package backup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/store"
)

// ApplyFunc applies the events of one source revision (in the order etcd
// reported them) to the cluster being restored.
type ApplyFunc func(ctx context.Context, rev int64, events []Event) error

// ReplayDeltas applies plan's segments onto a cluster restored from
// plan.Base: it first reads every segment and checks its hash against its
// meta (nothing is applied from a chain with a damaged segment), then
// reads them again and calls apply once per source revision above
// plan.Base.Revision, up to plan.TargetRevision and, for a time target,
// for events received at or before plan.TargetTime. It returns the last
// source revision applied (plan.Base.Revision when none was).
func ReplayDeltas(ctx context.Context, st store.Store, l control.Layout, plan Plan, apply ApplyFunc) (int64, error) {
	last := plan.Base.Revision
	if len(plan.Segments) == 0 {
		return last, nil
	}
	prev := plan.Base.Revision
	for i, s := range plan.Segments {
		if want := SegmentDataKey(l, s.Name); s.Object != want {
			return last, fmt.Errorf("delta segment %s: object %q is not %q (a plan for another cluster?)", s.Name, s.Object, want)
		}
		if i == 0 && (s.FirstRevision > prev+1 || s.LastRevision <= prev) {
			return last, fmt.Errorf("delta segment %s (revisions %d-%d) does not continue full backup %s at revision %d", s.Name, s.FirstRevision, s.LastRevision, plan.Base.Name, prev)
		}
		if i > 0 && s.FirstRevision != prev+1 {
			return last, fmt.Errorf("delta segment %s starts at revision %d, not %d after segment %s", s.Name, s.FirstRevision, prev+1, plan.Segments[i-1].Name)
		}
		prev = s.LastRevision
		if _, err := ReadSegment(ctx, st, s); err != nil {
			return last, err
		}
	}
	var stopAt int64
	if !plan.TargetTime.IsZero() {
		stopAt = plan.TargetTime.UnixNano()
	}
	for _, s := range plan.Segments {
		events, err := ReadSegment(ctx, st, s)
		if err != nil {
			return last, err
		}
		for i := 0; i < len(events); {
			rev := events[i].Revision
			j := i
			for j < len(events) && events[j].Revision == rev {
				j++
			}
			batch := events[i:j]
			i = j
			if rev <= plan.Base.Revision {
				continue
			}
			if rev > plan.TargetRevision || (stopAt != 0 && batch[0].Observed > stopAt) {
				return last, nil
			}
			if err := apply(ctx, rev, batch); err != nil {
				return last, fmt.Errorf("applying revision %d from delta segment %s: %w", rev, s.Name, err)
			}
			last = rev
		}
	}
	return last, nil
}

// DefaultReplayLeaseTTL is the time to live TxnApply gives a lease that a
// replayed key was written under and the restored cluster does not have
// (it was granted after the full backup): the lease's real TTL is not in
// the watch, and its holder renews or replaces it after the restore.
const DefaultReplayLeaseTTL = time.Hour

// TxnApply returns an ApplyFunc that applies one source revision as one
// transaction on c: puts (under their lease, created with the same ID and
// leaseTTL when the cluster lacks it) and deletes. A revision with more
// operations than the server allows in one transaction (--max-txn-ops) is
// applied in several.
func TxnApply(c *clientv3.Client, leaseTTL time.Duration) ApplyFunc {
	if leaseTTL <= 0 {
		leaseTTL = DefaultReplayLeaseTTL
	}
	known := map[int64]bool{}
	leases := etcdserverpb.NewLeaseClient(c.ActiveConnection())
	return func(ctx context.Context, rev int64, events []Event) error {
		ops := make([]clientv3.Op, 0, len(events))
		for _, e := range events {
			switch e.Type {
			case EventDelete:
				ops = append(ops, clientv3.OpDelete(string(e.Key)))
			default:
				if e.Lease != 0 && !known[e.Lease] {
					_, err := leases.LeaseGrant(ctx, &etcdserverpb.LeaseGrantRequest{ID: e.Lease, TTL: int64(leaseTTL / time.Second)})
					if err != nil && !errors.Is(rpctypes.Error(err), rpctypes.ErrLeaseExist) {
						return fmt.Errorf("creating lease %x: %w", e.Lease, err)
					}
					known[e.Lease] = true
				}
				var opts []clientv3.OpOption
				if e.Lease != 0 {
					opts = append(opts, clientv3.WithLease(clientv3.LeaseID(e.Lease)))
				}
				ops = append(ops, clientv3.OpPut(string(e.Key), string(e.Value), opts...))
			}
		}
		_, err := c.Txn(ctx).Then(ops...).Commit()
		if err != nil && errors.Is(rpctypes.Error(err), rpctypes.ErrTooManyOps) {
			for len(ops) > 0 {
				n := min(len(ops), 128)
				if _, err := c.Txn(ctx).Then(ops[:n]...).Commit(); err != nil {
					return err
				}
				ops = ops[n:]
			}
			return nil
		}
		return err
	}
}
