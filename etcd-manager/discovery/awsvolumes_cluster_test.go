package discovery_test

import (
	"context"
	"net"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kopsnode/agents/etcd-manager/discovery"
	"github.com/kopsnode/agents/etcd-manager/harness"
	"github.com/kopsnode/agents/etcd-manager/manager"
	"github.com/kopsnode/agents/etcd-manager/runconfig"
	awsvol "github.com/kopsnode/agents/volumes/aws"
	"github.com/kopsnode/agents/volumes/aws/ec2local"
)

// A cluster whose store registry is stale forms through its EBS volumes:
// three etcd-managers with real etcd on three instances of the EC2
// stand-in (ec2local) whose private addresses are the managers'
// addresses, each holding the volume tagged with its slot, while the store
// registry keeps naming every member at an address where nothing listens.
// Each manager's discovery is what `--discovery aws-volumes,store` builds
// (runconfig.NewDiscovery, through the real AWS SDK against ec2local and
// the instance's own metadata service), with the store registry's writes
// hidden so the managers cannot correct it.
func TestClusterFormsThroughAWSVolumesWithStaleStoreRegistry(t *testing.T) {
	const version = "3.6.16"
	cluster := "aws.k8s.local"
	// The SDK's credential chain reads these; ec2local does not check
	// signatures.
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	srv := ec2local.New(ec2local.Options{DeviceDir: t.TempDir(), Naming: ec2local.XenNaming})
	ec2 := httptest.NewServer(srv.Handler())
	t.Cleanup(ec2.Close)

	var mu sync.Mutex
	imds := map[string]string{} // member ID -> its instance's metadata service URL
	var built []error
	c := harness.New(t, harness.Options{IPPrefix: "127.44.203", Cluster: cluster, Versions: []string{version}, Mutate: func(cfg *manager.Config) {
		mu.Lock()
		defer mu.Unlock()
		rc := runconfig.DefaultConfig()
		rc.ClusterName, rc.EtcdCluster, rc.ManagerPort = cluster, cfg.EtcdCluster, cfg.ManagerPort
		rc.Discovery = []string{runconfig.DiscoveryAWSVolumes}
		rc.AWS.EC2Endpoint, rc.AWS.IMDSEndpoint = ec2.URL, imds[cfg.ID]
		d, err := rc.NewDiscovery(nil) // aws-volumes alone needs no store
		if err != nil {
			built = append(built, err)
			return
		}
		if _, ok := d.(discovery.AWSVolumes); !ok {
			t.Errorf("--discovery aws-volumes built %T", d)
		}
		cfg.Discovery = discovery.Union{d, lookupOnly{cfg.Discovery}}
	}})
	ids := []string{"m1", "m2", "m3"}
	for i, id := range ids {
		in := srv.AddInstance("us-east-1a", map[string]string{"Name": "control-plane-" + id})
		if err := srv.SetPrivateIP(in, c.IP(i+1)); err != nil {
			t.Fatal(err)
		}
		vol := srv.AddVolume("us-east-1a", 1, map[string]string{awsvol.ClusterTagPrefix + cluster: awsvol.ClusterTagValue, awsvol.EtcdClusterTag: "main", awsvol.SlotTag: id})
		if err := srv.AttachNow(vol, in, "/dev/xvdf"); err != nil {
			t.Fatal(err)
		}
		md := httptest.NewServer(srv.IMDSHandler(in))
		t.Cleanup(md.Close)
		mu.Lock()
		imds[id] = md.URL
		mu.Unlock()
	}
	// A fourth volume on a stopped instance whose address would be a
	// fourth manager's: it is never a peer.
	stopped := srv.AddInstance("us-east-1a", nil)
	if err := srv.SetPrivateIP(stopped, c.IP(4)); err != nil {
		t.Fatal(err)
	}
	v4 := srv.AddVolume("us-east-1a", 1, map[string]string{awsvol.ClusterTagPrefix + cluster: awsvol.ClusterTagValue, awsvol.EtcdClusterTag: "main", awsvol.SlotTag: "m4"})
	if err := srv.AttachNow(v4, stopped, "/dev/xvdf"); err != nil {
		t.Fatal(err)
	}
	if err := srv.SetInstanceState(stopped, ec2local.InstanceStopped); err != nil {
		t.Fatal(err)
	}

	// The stale registry: every member at another address, kept fresh.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	stale := discovery.NewStoreRegistry(c.Store, c.Layout.PeersPrefix(), time.Hour, nil)
	staleAddr := func(i int) string {
		return net.JoinHostPort("127.44.204."+strconv.Itoa(i+2), strconv.Itoa(harness.ManagerPort))
	}
	refresh := func() {
		for i, id := range ids {
			if err := stale.Register(ctx, discovery.Peer{ID: id, ManagerAddr: staleAddr(i)}); err != nil && ctx.Err() == nil {
				t.Errorf("writing the stale registry: %v", err)
			}
		}
	}
	refresh()
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(200 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				refresh()
			}
		}
	}()

	c.SetSpec(3, version)
	for i := range ids {
		c.Start(i + 1)
	}
	mu.Lock()
	if len(built) > 0 {
		t.Fatalf("building the discovery: %v", built)
	}
	mu.Unlock()
	c.WaitMembers(2*time.Minute, ids...)
	c.Put("/formed", "through EBS volumes")
	c.ExpectKey(30*time.Second, "/formed", "through EBS volumes", ids...)

	// What the managers saw: the three running holders at their addresses.
	rc := runconfig.DefaultConfig()
	rc.ClusterName, rc.ManagerPort, rc.Discovery = cluster, harness.ManagerPort, []string{runconfig.DiscoveryAWSVolumes}
	rc.AWS.EC2Endpoint, rc.AWS.IMDSEndpoint = ec2.URL, imds["m1"]
	d, err := rc.NewDiscovery(nil)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := d.Peers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 3 {
		t.Fatalf("aws-volumes peers %v, want m1..m3 (not the stopped m4)", ps)
	}
	for i, p := range ps {
		if want := net.JoinHostPort(c.IP(i+1), strconv.Itoa(harness.ManagerPort)); p.ID != ids[i] || p.ManagerAddr != want {
			t.Fatalf("aws-volumes peers %v: peer %d is not %s at %s", ps, i, ids[i], want)
		}
	}
	// The store registry was stale throughout.
	ps, err = discovery.NewStoreRegistry(c.Store, c.Layout.PeersPrefix(), time.Hour, nil).Peers(context.Background())
	if err != nil || len(ps) != 3 {
		t.Fatalf("store registry %v, %v", ps, err)
	}
	for i, p := range ps {
		if p.ManagerAddr != staleAddr(i) {
			t.Fatalf("the store registry was corrected (%v): the test proves nothing", ps)
		}
	}
}
