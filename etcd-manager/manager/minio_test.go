package manager_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/kopsnode/agents/etcd-manager/harness"
	"github.com/kopsnode/agents/etcd-manager/manager"
	"github.com/kopsnode/agents/pkg/store/s3"
	"github.com/kopsnode/agents/pkg/testtools"
)

// TestThreeMembersOnMinIO runs the three-member scenario against a real
// S3 server (MinIO): conditional writes there fence creation and the lease.
func TestThreeMembersOnMinIO(t *testing.T) {
	t.Parallel()
	m := testtools.StartMinIO(t, testtools.MinIOOptions{})
	m.CreateBucket(t, "state", false)
	st, err := s3.New(context.Background(), s3.Options{
		Bucket: "state", Prefix: "clusters", Endpoint: m.Endpoint, Region: m.Region, PathStyle: true,
		AccessKey: m.AccessKey, SecretKey: m.SecretKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	c := harness.New(t, harness.Options{IPPrefix: "127.44.8", Versions: []string{version}, Store: st})
	c.SetSpec(3, version)
	ids := startN(c, 3)
	c.WaitMembers(converge, ids...)
	c.Put("/before", "minio")
	l := c.WaitLeader(converge)
	c.Kill(l)
	var rest []string
	for _, id := range ids {
		if id != l {
			rest = append(rest, id)
		}
	}
	c.WaitLeader(converge)
	c.ExpectKey(converge, "/before", "minio", rest...)
	if cr, ok := c.Created(); !ok || len(cr.InitialMembers) != 3 {
		t.Fatalf("created marker %+v, %v", cr, ok)
	}

	// The store becomes unreachable: the error is reported, nobody leads
	// (nothing fenced can happen), and etcd keeps running and serving.
	pids := map[string]int{}
	for _, id := range rest {
		pids[id] = c.Instance(id).M.EtcdPid()
	}
	m.Kill(t)
	c.Eventually(converge, "store errors reported, no leader", func() error {
		if ls := c.Leaders(); len(ls) != 0 {
			return fmt.Errorf("leaders %v", ls)
		}
		for _, id := range rest {
			st, _ := c.Instance(id).M.Status(context.Background())
			if !strings.Contains(st.LastError, m.Endpoint) && !strings.Contains(st.LastError, "s3://state") {
				return fmt.Errorf("%s: last error %q", id, st.LastError)
			}
		}
		return nil
	})
	c.ExpectKey(converge, "/before", "minio", rest...)
	for _, id := range rest {
		if got := c.Instance(id).M.EtcdPid(); got != pids[id] {
			t.Fatalf("%s: etcd pid changed from %d to %d while the store was down", id, pids[id], got)
		}
	}
	// Restart the members while the store is still down: they come back
	// on the certificates of their last run, etcd serves, nobody leads.
	c.StopAll()
	for _, id := range rest {
		n := map[string]int{"m1": 1, "m2": 2, "m3": 3}[id]
		c.Start(n)
	}
	c.ExpectKey(converge, "/before", "minio", rest...)
	if ls := c.Leaders(); len(ls) != 0 {
		t.Fatalf("leaders %v while the store is down", ls)
	}
	// A new instance with no earlier run cannot start without the store.
	if _, err := manager.Start(context.Background(), c.Config("m9", c.IP(9))); err == nil || !strings.Contains(err.Error(), "s3://state") {
		t.Fatalf("a new instance started without the store: %v", err)
	}
	m.Restart(t)
	c.WaitLeader(converge)
	c.Put("/after", "minio")
	c.ExpectKey(converge, "/after", "minio", rest...)
}
