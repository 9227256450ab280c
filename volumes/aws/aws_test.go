package aws_test

// These tests run the provider through aws-sdk-go-v2's real EC2 and IMDS
// clients against ec2local, a local HTTP server that speaks the EC2 Query API
// and IMDSv2 for the calls the provider makes: a stand-in for AWS, which
// cannot be reached from a test.

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/volumes"
	awsvol "github.com/kopsnode/agents/volumes/aws"
	"github.com/kopsnode/agents/volumes/aws/ec2local"
)

const (
	zoneA = "us-east-1a"
	zoneB = "us-east-1b"
)

type env struct {
	srv    *ec2local.Server
	ec2URL string
	devDir string
}

func newEnv(t *testing.T, naming ec2local.DeviceNaming, delay time.Duration) *env {
	t.Helper()
	return newEnvOpts(t, ec2local.Options{Delay: delay, Naming: naming})
}

func newEnvOpts(t *testing.T, opts ec2local.Options) *env {
	t.Helper()
	e := &env{devDir: t.TempDir()}
	opts.DeviceDir, opts.Logger = e.devDir, testLogger(t)
	e.srv = ec2local.New(opts)
	hs := httptest.NewServer(e.srv.Handler())
	t.Cleanup(hs.Close)
	e.ec2URL = hs.URL
	return e
}

// pausableClock is the wall clock, except that it stands still between
// pause and resume (and then goes on from where it stood).
type pausableClock struct {
	mu       sync.Mutex
	pausedAt time.Time     // zero: running
	behind   time.Duration // total time spent paused
}

func (c *pausableClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.pausedAt.IsZero() {
		return c.pausedAt.Add(-c.behind)
	}
	return time.Now().Add(-c.behind)
}

func (c *pausableClock) pause() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pausedAt = time.Now()
}

func (c *pausableClock) resume() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.behind += time.Since(c.pausedAt)
	c.pausedAt = time.Time{}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// machine starts an instance in zone and a provider running on it.
func (e *env) machine(t *testing.T, zone string) (*awsvol.Provider, string) {
	t.Helper()
	id := e.srv.AddInstance(zone, map[string]string{"Name": "test"})
	md := httptest.NewServer(e.srv.IMDSHandler(id))
	t.Cleanup(md.Close)
	p, err := awsvol.New(context.Background(), config.AWSVolumeSpec{EC2Endpoint: e.ec2URL, IMDSEndpoint: md.URL}, awsvol.Options{
		Logger:          testLogger(t),
		DeviceDir:       filepath.Join(e.devDir, id),
		PollInterval:    20 * time.Millisecond,
		WaitTimeout:     5 * time.Second,
		DeviceTimeout:   2 * time.Second,
		RetryMaxBackoff: 20 * time.Millisecond,
		Credentials:     credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", ""),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if p.InstanceID() != id || p.Zone() != zone || p.Region() != "us-east-1" {
		t.Fatalf("provider on %s: instance %q zone %q region %q from IMDS, want %s %s us-east-1", id, p.InstanceID(), p.Zone(), p.Region(), id, zone)
	}
	return p, id
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestCreateFindAttachDetach(t *testing.T) {
	for _, naming := range []ec2local.DeviceNaming{ec2local.NVMeNaming, ec2local.XenNaming} {
		t.Run(string(naming), func(t *testing.T) {
			e := newEnv(t, naming, 50*time.Millisecond)
			ctx := ctxT(t)
			p, id := e.machine(t, zoneA)
			// A volume of another cluster and one of another etcd cluster
			// must not be found.
			e.srv.AddVolume(zoneA, 10, map[string]string{"kubernetes.io/cluster/other": "owned", awsvol.EtcdClusterTag: "main", awsvol.SlotTag: "main-1"})
			e.srv.AddVolume(zoneA, 10, map[string]string{"kubernetes.io/cluster/c1": "owned", awsvol.EtcdClusterTag: "events", awsvol.SlotTag: "events-1"})

			// Nor one of this etcd cluster without a slot tag.
			e.srv.AddVolume(zoneA, 10, map[string]string{"kubernetes.io/cluster/c1": "owned", awsvol.EtcdClusterTag: "main"})

			sel := volumes.Selector{Cluster: "c1", EtcdCluster: "main", Slot: "main-1"}
			v, err := p.Create(ctx, sel, config.VolumeSpec{SizeGiB: 20, Type: "io2", IOPS: 4000})
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			if v.Slot != "main-1" || v.Attachment.State != volumes.NotAttached {
				t.Fatalf("created %+v, want slot main-1, not attached", v)
			}
			st, _ := e.srv.Volume(v.ID)
			if st.State != "available" || st.AvailabilityZone != zoneA || st.SizeGiB != 20 || st.Type != "io2" || st.IOPS != 4000 ||
				st.Tags["kubernetes.io/cluster/c1"] != "owned" || st.Tags[awsvol.EtcdClusterTag] != "main" || st.Tags[awsvol.SlotTag] != "main-1" {
				t.Fatalf("EC2 holds %+v, want an available 20 GiB io2 volume of 4000 IOPS in %s tagged for c1/main/main-1", st, zoneA)
			}

			vols, err := p.List(ctx, "c1", "main")
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if len(vols) != 1 || vols[0].ID != v.ID || vols[0].Slot != "main-1" || vols[0].Attachment.State != volumes.NotAttached {
				t.Fatalf("List = %+v, want only %s, slot main-1, not attached", vols, v.ID)
			}

			dev, err := p.Attach(ctx, v)
			if err != nil {
				t.Fatalf("Attach: %v", err)
			}
			want := filepath.Join(e.devDir, id, "xvdf")
			if naming == ec2local.NVMeNaming {
				want = filepath.Join(e.devDir, id, "disk/by-id/nvme-Amazon_Elastic_Block_Store_"+strings.ReplaceAll(v.ID, "-", ""))
			}
			if dev != want {
				t.Fatalf("AttachEBS = %s, want %s", dev, want)
			}
			if st, _ := e.srv.Volume(v.ID); st.Instance != id || st.AttachState != "attached" || st.Device != "/dev/xvdf" {
				t.Fatalf("after attach EC2 holds %+v, want attached to %s at /dev/xvdf", st, id)
			}
			// Again: a no-op that returns the same device.
			calls := e.srv.Calls("AttachVolume")
			if vols, err := p.List(ctx, "c1", "main"); err != nil || len(vols) != 1 || vols[0].Attachment.State != volumes.AttachedHere {
				t.Fatalf("List after attach = %+v, %v; want the volume attached here", vols, err)
			}
			if dev2, err := p.Attach(ctx, v); err != nil || dev2 != dev {
				t.Fatalf("second Attach = %s, %v; want %s", dev2, err, dev)
			}
			if n := e.srv.Calls("AttachVolume"); n != calls {
				t.Fatalf("second AttachEBS called AttachVolume again (%d calls, want %d)", n, calls)
			}

			// A second volume takes the next device name.
			v2, err := p.CreateEBS(ctx, "c1", "events", "events-2", awsvol.VolumeSpec{SizeGiB: 5})
			if err != nil {
				t.Fatalf("CreateEBS: %v", err)
			}
			if _, err := p.AttachEBS(ctx, v2.ID); err != nil {
				t.Fatalf("AttachEBS second volume: %v", err)
			}
			if st, _ := e.srv.Volume(v2.ID); st.Device != "/dev/xvdg" || st.Type != "gp3" {
				t.Fatalf("second volume %+v, want gp3 at /dev/xvdg", st)
			}

			if err := p.Detach(ctx, v); err != nil {
				t.Fatalf("Detach: %v", err)
			}
			if st, _ := e.srv.Volume(v.ID); st.State != "available" || st.Instance != "" {
				t.Fatalf("after detach EC2 holds %+v, want available", st)
			}
			if _, err := os.Stat(dev); !os.IsNotExist(err) {
				t.Fatalf("device %s still there after detach: %v", dev, err)
			}
		})
	}
}

func TestRefusesVolumeOfRunningInstance(t *testing.T) {
	e := newEnv(t, ec2local.NVMeNaming, 0)
	ctx := ctxT(t)
	p1, id1 := e.machine(t, zoneA)
	p2, id2 := e.machine(t, zoneA)
	v, err := p1.CreateEBS(ctx, "c1", "main", "main-1", awsvol.VolumeSpec{SizeGiB: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p1.AttachEBS(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	vols, err := p2.List(ctx, "c1", "main")
	if err != nil {
		t.Fatal(err)
	}
	want := volumes.Attachment{State: volumes.AttachedElsewhere, Instance: id1, InstanceRunning: true}
	if len(vols) != 1 || vols[0].Attachment != want {
		t.Fatalf("List from %s = %+v, want attachment %+v", id2, vols, want)
	}
	_, err = p2.Attach(ctx, vols[0])
	var held *awsvol.AttachedElsewhereError
	if !errors.As(err, &held) || held.Instance != id1 || held.VolumeID != v.ID {
		t.Fatalf("AttachEBS from %s = %v, want AttachedElsewhereError naming %s", id2, err, id1)
	}
	if !strings.Contains(err.Error(), id1) || !strings.Contains(err.Error(), v.ID) {
		t.Fatalf("error %q does not name instance %s and volume %s", err, id1, v.ID)
	}
	// Detach from the wrong machine is refused too, and changes nothing.
	if err := p2.Detach(ctx, vols[0]); !errors.As(err, &held) || held.Instance != id1 {
		t.Fatalf("Detach from %s = %v, want AttachedElsewhereError naming %s", id2, err, id1)
	}
	if st, _ := e.srv.Volume(v.ID); st.Instance != id1 || st.AttachState != "attached" {
		t.Fatalf("volume %+v, want still attached to %s", st, id1)
	}
	if n := e.srv.Calls("DetachVolume"); n != 0 {
		t.Fatalf("DetachVolume called %d times, want 0", n)
	}
}

// TestAdoptAfterOldInstanceTerminated goes as slots.Acquirer does on a
// replacement machine: List, Detach of a volume whose instance is not
// running (a wait for EC2 to release it, not a DetachVolume call), Attach.
func TestAdoptAfterOldInstanceTerminated(t *testing.T) {
	clk := &pausableClock{}
	e := newEnvOpts(t, ec2local.Options{Delay: 300 * time.Millisecond, Naming: ec2local.NVMeNaming, Now: clk.now})
	ctx := ctxT(t)
	p1, id1 := e.machine(t, zoneA)
	sel := volumes.Selector{Cluster: "c1", EtcdCluster: "main", Slot: "main-1"}
	v, err := p1.Create(ctx, sel, config.VolumeSpec{SizeGiB: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p1.Attach(ctx, v); err != nil {
		t.Fatal(err)
	}
	// The replacement machine starts while the old one shuts down.
	p2, id2 := e.machine(t, zoneA)
	// EC2's clock stands still until the replacement has listed, so it
	// sees the volume still held by the terminated instance however slow
	// the call (the release takes the 300 ms Delay).
	clk.pause()
	if err := e.srv.SetInstanceState(id1, ec2local.InstanceTerminated); err != nil {
		t.Fatal(err)
	}
	vols, err := p2.List(ctx, "c1", "main")
	clk.resume()
	if err != nil {
		t.Fatal(err)
	}
	want := volumes.Attachment{State: volumes.AttachedElsewhere, Instance: id1, InstanceRunning: false}
	if len(vols) != 1 || vols[0].Slot != "main-1" || vols[0].Attachment != want {
		t.Fatalf("List on the replacement = %+v, want slot main-1 with attachment %+v", vols, want)
	}
	if err := p2.Detach(ctx, vols[0]); err != nil {
		t.Fatalf("Detach from the terminated instance: %v", err)
	}
	if st, _ := e.srv.Volume(v.ID); st.State != "available" {
		t.Fatalf("after Detach the volume is %+v, want available", st)
	}
	dev, err := p2.Attach(ctx, vols[0])
	if err != nil {
		t.Fatalf("Attach on the replacement: %v", err)
	}
	if !strings.HasPrefix(dev, filepath.Join(e.devDir, id2)) {
		t.Fatalf("device %s is not in %s's device directory", dev, id2)
	}
	if st, _ := e.srv.Volume(v.ID); st.Instance != id2 || st.AttachState != "attached" {
		t.Fatalf("volume %+v, want attached to %s", st, id2)
	}
	if n := e.srv.Calls("DetachVolume"); n != 0 {
		t.Fatalf("DetachVolume called %d times: the old attachment must go with the instance, never be forced", n)
	}

	// Attach alone waits for the release too (no List/Detach first).
	p3, id3 := e.machine(t, zoneA)
	if err := e.srv.SetInstanceState(id2, ec2local.InstanceTerminated); err != nil {
		t.Fatal(err)
	}
	if _, err := p3.Attach(ctx, vols[0]); err != nil {
		t.Fatalf("Attach on a second replacement: %v", err)
	}
	if st, _ := e.srv.Volume(v.ID); st.Instance != id3 {
		t.Fatalf("volume %+v, want attached to %s", st, id3)
	}
}

// TestStoppedHolderIsWaitedOn: a stopped instance keeps its volumes; the
// provider waits for it to be terminated and never detaches the volume.
func TestStoppedHolderIsWaitedOn(t *testing.T) {
	e := newEnv(t, ec2local.XenNaming, 0)
	ctx := ctxT(t)
	p1, id1 := e.machine(t, zoneA)
	v, err := p1.Create(ctx, volumes.Selector{Cluster: "c1", EtcdCluster: "main", Slot: "main-1"}, config.VolumeSpec{SizeGiB: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p1.Attach(ctx, v); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.SetInstanceState(id1, ec2local.InstanceStopped); err != nil {
		t.Fatal(err)
	}
	p2, _ := e.machine(t, zoneA)
	vols, err := p2.List(ctx, "c1", "main")
	if err != nil || len(vols) != 1 || vols[0].Attachment.InstanceRunning {
		t.Fatalf("List = %+v, %v; want the volume held by a stopped (not running) instance", vols, err)
	}
	err = p2.Detach(ctx, vols[0]) // WaitTimeout is 5s in these tests
	for _, want := range []string{v.ID, id1, "stopped", "terminate"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Detach of a volume held by stopped %s = %v, want an error naming %q", id1, err, want)
		}
	}
	if st, _ := e.srv.Volume(v.ID); st.Instance != id1 || e.srv.Calls("DetachVolume") != 0 {
		t.Fatalf("volume %+v after %d DetachVolume calls; want it left attached to %s", st, e.srv.Calls("DetachVolume"), id1)
	}
	// Terminated meanwhile: Attach waits for the release and takes it.
	go func() {
		time.Sleep(200 * time.Millisecond)
		e.srv.SetInstanceState(id1, ec2local.InstanceTerminated)
	}()
	if _, err := p2.Attach(ctx, vols[0]); err != nil {
		t.Fatalf("Attach after the stopped holder was terminated: %v", err)
	}
}

func TestThrottlingIsRetried(t *testing.T) {
	e := newEnv(t, ec2local.XenNaming, 0)
	ctx := ctxT(t)
	p, _ := e.machine(t, zoneA)
	e.srv.Inject(ec2local.Fault{Action: "CreateVolume", Code: "RequestLimitExceeded", Status: 503, Count: 3})
	e.srv.Inject(ec2local.Fault{Action: "AttachVolume", Code: "InternalError", Status: 500, Count: 2})
	v, err := p.CreateEBS(ctx, "c1", "main", "main-1", awsvol.VolumeSpec{SizeGiB: 1})
	if err != nil {
		t.Fatalf("CreateEBS with 3 throttled answers: %v", err)
	}
	if n := e.srv.Calls("CreateVolume"); n != 4 {
		t.Fatalf("CreateVolume called %d times, want 4 (3 throttled + 1)", n)
	}
	if n := len(e.srv.Volumes()); n != 1 {
		t.Fatalf("%d volumes exist, want 1", n)
	}
	if _, err := p.AttachEBS(ctx, v.ID); err != nil {
		t.Fatalf("AttachEBS with 2 answers of 500: %v", err)
	}
	if n := e.srv.Calls("AttachVolume"); n != 3 {
		t.Fatalf("AttachVolume called %d times, want 3", n)
	}

	// Throttled beyond the retry budget: an error naming the call, the
	// volume and the code.
	e.srv.Inject(ec2local.Fault{Action: "DetachVolume", Code: "RequestLimitExceeded", Status: 503, Count: 100})
	err = p.DetachEBS(ctx, v.ID)
	for _, want := range []string{"ec2:DetachVolume", v.ID, "RequestLimitExceeded"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("DetachEBS throttled for good = %v, want an error naming %q", err, want)
		}
	}
}

func TestDeviceNeverAppears(t *testing.T) {
	e := newEnv(t, ec2local.NoDevice, 0)
	ctx := ctxT(t)
	p, id := e.machine(t, zoneA)
	v, err := p.CreateEBS(ctx, "c1", "main", "main-1", awsvol.VolumeSpec{SizeGiB: 1})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = p.AttachEBS(ctx, v.ID)
	if err == nil {
		t.Fatal("AttachEBS succeeded without a device")
	}
	dir := filepath.Join(e.devDir, id)
	for _, want := range []string{v.ID, filepath.Join(dir, "xvdf"), filepath.Join(dir, "sdf"), filepath.Join(dir, "disk/by-id/nvme-Amazon_Elastic_Block_Store_"+strings.ReplaceAll(v.ID, "-", "")), "deadline exceeded"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not name %q", err, want)
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("gave up after %s, want about the 2s device timeout", d)
	}
}

func TestWrongZone(t *testing.T) {
	e := newEnv(t, ec2local.NVMeNaming, 0)
	ctx := ctxT(t)
	p, _ := e.machine(t, zoneA)
	id := e.srv.AddVolume(zoneB, 1, map[string]string{"kubernetes.io/cluster/c1": "owned", awsvol.EtcdClusterTag: "main", awsvol.SlotTag: "main-2"})
	vols, err := p.List(ctx, "c1", "main")
	if err != nil || len(vols) != 1 || vols[0].ID != id || vols[0].Slot != "main-2" {
		t.Fatalf("List = %+v, %v; want the volume %s in %s listed (its slot is taken)", vols, err, id, zoneB)
	}
	if !strings.Contains(vols[0].Unreachable, zoneB) {
		t.Fatalf("List: volume %s in %s has Unreachable %q, want the reason naming its zone (slots must never adopt it here)", id, zoneB, vols[0].Unreachable)
	}
	_, err = p.Attach(ctx, vols[0])
	if !errors.Is(err, awsvol.ErrWrongZone) || !strings.Contains(err.Error(), zoneB) {
		t.Fatalf("AttachEBS of a volume in %s = %v, want ErrWrongZone naming the zone", zoneB, err)
	}
}

// TestListPagesAndSorts: List follows DescribeVolumes' NextToken, keeps only
// this etcd cluster's volumes with a valid slot tag, sorted by slot.
func TestListPagesAndSorts(t *testing.T) {
	e := newEnvOpts(t, ec2local.Options{PageSize: 1})
	ctx := ctxT(t)
	p, _ := e.machine(t, zoneA)
	tags := func(slot string) map[string]string {
		m := map[string]string{"kubernetes.io/cluster/c1": "owned", awsvol.EtcdClusterTag: "main"}
		if slot != "" {
			m[awsvol.SlotTag] = slot
		}
		return m
	}
	v3 := e.srv.AddVolume(zoneA, 1, tags("main-3"))
	v1 := e.srv.AddVolume(zoneB, 1, tags("main-1"))
	e.srv.AddVolume(zoneA, 1, tags(""))
	e.srv.AddVolume(zoneA, 1, tags("Not A Slot"))
	v2 := e.srv.AddVolume(zoneA, 1, tags("main-2"))
	vols, err := p.List(ctx, "c1", "main")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range vols {
		got = append(got, v.ID+"="+v.Slot)
	}
	want := []string{v1 + "=main-1", v2 + "=main-2", v3 + "=main-3"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("List = %v, want %v", got, want)
	}
	if n := e.srv.Calls("DescribeVolumes"); n != 5 {
		t.Fatalf("DescribeVolumes called %d times, want 5 (one volume per page)", n)
	}
}

// TestNewNamesTheMetadataService: an instance metadata service that does not
// know the instance (404) is an error naming the path and the endpoint.
func TestNewNamesTheMetadataService(t *testing.T) {
	e := newEnv(t, ec2local.NoDevice, 0)
	md := httptest.NewServer(e.srv.IMDSHandler("i-0000000000000dead"))
	t.Cleanup(md.Close)
	_, err := awsvol.New(ctxT(t), config.AWSVolumeSpec{EC2Endpoint: e.ec2URL, IMDSEndpoint: md.URL}, awsvol.Options{
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", ""),
	})
	for _, want := range []string{"instance-id", md.URL} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("New with an IMDS that does not know the instance = %v, want an error naming %q", err, want)
		}
	}
}

// TestAlreadyAttachedHere: a volume attached to this instance before the
// provider ran (at /dev/sdf, as a launch template would) is used where it
// is, without an AttachVolume call, and its name is not given to another.
func TestAlreadyAttachedHere(t *testing.T) {
	e := newEnv(t, ec2local.XenNaming, 0)
	ctx := ctxT(t)
	p, id := e.machine(t, zoneA)
	vid := e.srv.AddVolume(zoneA, 1, map[string]string{"kubernetes.io/cluster/c1": "owned", awsvol.EtcdClusterTag: "main", awsvol.SlotTag: "main-1"})
	if err := e.srv.AttachNow(vid, id, "/dev/sdf"); err != nil {
		t.Fatal(err)
	}
	vols, err := p.List(ctx, "c1", "main")
	if err != nil || len(vols) != 1 || vols[0].Attachment.State != volumes.AttachedHere {
		t.Fatalf("List = %+v, %v; want %s attached here", vols, err, vid)
	}
	dev, err := p.Attach(ctx, vols[0])
	if want := filepath.Join(e.devDir, id, "xvdf"); err != nil || dev != want {
		t.Fatalf("Attach = %s, %v; want %s (Xen shows /dev/sdf as xvdf)", dev, err, want)
	}
	if n := e.srv.Calls("AttachVolume"); n != 0 {
		t.Fatalf("AttachVolume called %d times for a volume attached here, want 0", n)
	}
	v2, err := p.Create(ctx, volumes.Selector{Cluster: "c1", EtcdCluster: "events", Slot: "events-1"}, config.VolumeSpec{SizeGiB: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Attach(ctx, v2); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.srv.Volume(v2.ID); st.Device != "/dev/xvdg" {
		t.Fatalf("second volume attached at %s, want /dev/xvdg (f is taken by /dev/sdf)", st.Device)
	}
}
