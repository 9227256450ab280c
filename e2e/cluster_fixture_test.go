package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/e2e/machine"
	"github.com/kopsnode/agents/nodeup/tasks"
	"github.com/kopsnode/agents/pkg/testtools"
	"github.com/kopsnode/agents/pkg/testtools/netns"
	units "github.com/kopsnode/agents/systemd-units"
)

// clusterPrefix is the cluster test's machine network. It differs from
// netns.DefaultPrefix because the test process joins it (HostLink).
var clusterPrefix = netip.MustParsePrefix("10.232.0.0/24")

const (
	clusterName      = "e2e.k8s.local"
	clusterBucket    = "kopsnode-e2e"
	clusterPrefixKey = "state"
)

// clusterFixture is a cluster's infrastructure as a cloud would provide
// it: a network of machines, an S3 state store (real MinIO), a release
// mirror serving the assets over HTTP, and machines booted from a node
// image that run their userdata with cloud-init.
type clusterFixture struct {
	t       testing.TB
	nw      *netns.Network
	minio   *testtools.MinIO
	mirror  *assetServer
	nodeup  []byte // the nodeup binary the userdata downloads
	nodeupB string // its path on the host, to render userdata
	// machines by name, in boot order.
	machines map[string]*clusterMachine
	nextHost int
	// baked maps an instance group to its baked asset cache on the host
	// (bootCluster with Baked), given to the group's machines at boot.
	baked map[string]string
}

// clusterMachine is one booted machine of the cluster.
type clusterMachine struct {
	*machine.Machine
	host  *netns.Host
	group string
	// loops are the etcd volumes (loop devices) of a control-plane machine,
	// by etcd cluster name.
	loops map[string]string
	opts  machine.Options
}

func newClusterFixture(t testing.TB, hosts int) *clusterFixture {
	t.Helper()
	testtools.RequireRoot(t)
	c := &clusterFixture{t: t, machines: map[string]*clusterMachine{}}
	keepHostSysctls(t)
	checkNoHostPodCgroups(t)
	c.nw = netns.NewWith(t, netns.Options{Hosts: hosts, Prefix: clusterPrefix, Gateway: true, HostLink: true})
	c.minio = testtools.StartMinIO(t, testtools.MinIOOptions{IP: c.nw.HostAddr.String()})
	c.minio.CreateBucket(t, clusterBucket, false)
	ln, err := net.Listen("tcp", net.JoinHostPort(c.nw.HostAddr.String(), "0"))
	if err != nil {
		t.Fatalf("release mirror: %v", err)
	}
	c.mirror = newAssetServer(t, ln)
	c.nodeupB = buildBinary(t, "nodeup/cmd/nodeup")
	if c.nodeup, err = os.ReadFile(c.nodeupB); err != nil {
		t.Fatal(err)
	}
	return c
}

// storeURL is the state store as nodes name it.
func (c *clusterFixture) storeURL() string {
	return "s3://" + clusterBucket + "/" + clusterPrefixKey
}

// cgroupsRWUnit remounts the machine's cgroup controllers read-write at
// boot, before anything that starts the kubelet.
const cgroupsRWUnit = `[Unit]
Description=e2e: cgroup controllers writable for the kubelet
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target cloud-final.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for d in /sys/fs/cgroup/*/; do mount -o remount,bind,rw "$d"; done'
`

// hostSysctls are the kernel settings a kubelet writes that are not
// namespaced: a kubelet in a machine changes them for the host.
var hostSysctls = []string{"vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops"}

// keepHostSysctls restores the host's values of hostSysctls when the test
// ends.
func keepHostSysctls(t testing.TB) {
	t.Helper()
	saved := map[string][]byte{}
	for _, k := range hostSysctls {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			t.Fatalf("reading host sysctl %s: %v", k, err)
		}
		saved[k] = b
	}
	t.Cleanup(func() {
		for k, v := range saved {
			if err := os.WriteFile("/proc/sys/"+k, v, 0o644); err != nil {
				t.Errorf("restoring host sysctl %s to %q: %v", k, strings.TrimSpace(string(v)), err)
			}
		}
	})
}

// checkNoHostPodCgroups fails the test if a kubelet in a machine made its
// pod cgroups in the host's own cgroups (where machines would share them
// and they would outlive the test), checked when the test ends.
func checkNoHostPodCgroups(t testing.TB) {
	t.Helper()
	find := func() []string {
		var found []string
		data, _ := os.ReadFile("/proc/self/cgroup")
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			parts := strings.SplitN(line, ":", 3)
			if len(parts) != 3 || parts[1] == "" || strings.HasPrefix(parts[1], "name=") {
				continue
			}
			m, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", parts[1], parts[2], "kubepods*"))
			found = append(found, m...)
		}
		return found
	}
	if f := find(); len(f) > 0 {
		t.Fatalf("pod cgroups of an earlier run are in the host's cgroups: %v; remove them (rmdir, deepest first)", f)
	}
	t.Cleanup(func() {
		if f := find(); len(f) > 0 {
			t.Errorf("a machine's kubelet made pod cgroups in the host's cgroups: %v", f)
		}
	})
}

// loopDevice makes a blank loop device of size bytes, removed at cleanup.
func loopDevice(t testing.TB, size int64) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(f, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", f).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// etcdDevice is where a control-plane machine sees its etcd cluster's
// volume: every machine of the group at the same path, as a cloud attaches
// a volume at a fixed device name.
func etcdDevice(etcdCluster string) string { return "/dev/etcd-" + etcdCluster }

// boot launches a machine of a group with its userdata, as a cloud would:
// a fresh node image, the userdata in cloud-init's NoCloud seed, the store
// credentials in the machine's environment (an instance role's job on a
// cloud), its own address on the network, and for control-plane machines
// one blank disk per etcd cluster.
func (c *clusterFixture) boot(name, group string, userdata []byte, etcdClusters []string) *clusterMachine {
	c.t.Helper()
	if c.nextHost >= len(c.nw.Hosts) {
		c.t.Fatalf("no free host in the network for machine %s", name)
	}
	h := c.nw.Hosts[c.nextHost]
	c.nextHost++
	cm := &clusterMachine{host: h, group: group, loops: map[string]string{}}
	// containerd's snapshots cannot live on the machine's overlay root
	// (overlayfs on overlayfs): give it a directory of the host's disk.
	containerdDir := c.t.TempDir()
	cm.opts = machine.Options{
		Name:      name,
		Tree:      machine.NodeTree(c.t),
		NetNSPath: "/run/netns/" + h.NS,
		Files: []machine.File{
			{Path: machine.NoCloudSeedDir + "/meta-data", Data: []byte("instance-id: " + name + "\nlocal-hostname: " + name + "\n")},
			{Path: machine.NoCloudSeedDir + "/user-data", Data: userdata, Mode: 0o600},
			// Every unit gets the store credentials, as an instance role
			// gives them to every process on a cloud machine.
			{Path: "/etc/systemd/system.conf.d/10-store-credentials.conf", Mode: 0o600, Data: []byte(fmt.Sprintf(
				"[Manager]\nDefaultEnvironment=AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s AWS_REGION=%s\n"+
					// Pod processes outlive a stopped kubelet; a poweroff
					// waits this long for them, not systemd's 90 s.
					"DefaultTimeoutStopSec=15s\n",
				c.minio.AccessKey, c.minio.SecretKey, c.minio.Region))},
			// systemd-nspawn mounts the v1 cgroup controllers read-only
			// (without a user namespace); the kubelet creates its pod
			// cgroups in them. The machine's own cgroup namespace keeps
			// that inside the machine's cgroups.
			{Path: "/etc/systemd/system/cgroups-rw.service", Data: []byte(cgroupsRWUnit)},
			// The kubelet watches the kernel log for OOM kills.
			{Path: "/etc/tmpfiles.d/kmsg.conf", Data: []byte("L /dev/kmsg - - - - /dev/console\n")},
			// Names outside the cluster resolve nowhere: the network has no
			// way out, by design.
			{Path: "/etc/resolv.conf", Data: []byte("nameserver " + c.nw.Gateway.String() + "\n")},
			{Path: "/etc/hosts", Data: []byte("127.0.0.1 localhost\n" + h.Addr.String() + " " + name + "\n")},
		},
		Binds: []machine.Bind{{Source: containerdDir, Target: "/var/lib/containerd"}},
		// The kubelet creates its cgroups in every v1 controller and sets
		// kernel sysctls; nspawn mounts both read-only unless told
		// otherwise. The host-wide sysctls it changes are restored by
		// keepHostSysctls.
		Env: []string{"SYSTEMD_NSPAWN_API_VFS_WRITABLE=yes"},
		ExtraArgs: []string{
			"--system-call-filter=@keyring bpf",
			"--resolv-conf=off",
		},
		BootTimeout: 5 * time.Minute,
		BeforeBoot: func(root string) error {
			wants := filepath.Join(root, "etc/systemd/system/sysinit.target.wants")
			if err := os.MkdirAll(wants, 0o755); err != nil {
				return err
			}
			return os.Symlink("/etc/systemd/system/cgroups-rw.service", filepath.Join(wants, "cgroups-rw.service"))
		},
	}
	if cache := c.baked[group]; cache != "" {
		// A baked image: nodeup installed, its asset cache filled.
		cm.opts.Binds = append(cm.opts.Binds, machine.Bind{Source: cache, Target: tasks.CacheDir})
		cm.opts.Files = append(cm.opts.Files, machine.File{Path: units.NodeupBin, Data: c.nodeup, Mode: 0o755})
	}
	for _, e := range etcdClusters {
		dev := loopDevice(c.t, 1<<30)
		cm.loops[e] = dev
		cm.opts.Devices = append(cm.opts.Devices, machine.Bind{Source: dev, Target: etcdDevice(e)})
	}
	cm.Machine = machine.Boot(c.t, cm.opts)
	c.machines[name] = cm
	c.t.Cleanup(func() {
		if c.t.Failed() {
			c.dumpJournals(cm)
		}
	})
	return cm
}

// clusterUnits are the units whose journals a failure prints.
var clusterUnits = []string{"cloud-final.service", "nodeup.service", "containerd.service", "kubelet.service", "kube-proxy.service",
	"kube-apiserver.service", "kube-controller-manager.service", "kube-scheduler.service",
	"protokube.service", "protokube-etcd-volumes.service", "protokube-manifests.service",
	"etcd-manager-main.service", "etcd-manager-events.service"}

// dumpJournals logs the journal of every failed or unhealthy unit of a
// machine, so a failure says why without a rerun.
func (c *clusterFixture) dumpJournals(cm *clusterMachine) {
	if cm.InitPID() == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	failed, _ := cm.Exec(ctx, "systemctl", "list-units", "--failed", "--no-legend", "--plain")
	c.t.Logf("machine %s: failed units:\n%s", cm.Name(), failed)
	for _, u := range clusterUnits {
		state, _ := cm.Exec(ctx, "systemctl", "is-active", u)
		state = strings.TrimSpace(state)
		if state == "inactive" && !strings.Contains(failed, u) {
			if exists, _ := cm.Exec(ctx, "systemctl", "show", "-P", "LoadState", u); strings.TrimSpace(exists) == "not-found" {
				continue
			}
		}
		j, _ := cm.Exec(ctx, "journalctl", "--no-pager", "-o", "short-monotonic", "-n", "60", "-u", u)
		c.t.Logf("machine %s: %s is %s; journal:\n%s", cm.Name(), u, state, j)
	}
	if st, err := cm.Exec(ctx, "/usr/local/bin/nodeup", "status"); err == nil {
		c.t.Logf("machine %s: nodeup status:\n%s", cm.Name(), st)
	}
}

// kubectl runs kubectl on a control-plane machine with the admin
// kubeconfig nodeup wrote there, as an operator would over SSH.
func (c *clusterFixture) kubectl(cm *clusterMachine, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return cm.Exec(ctx, append([]string{"/usr/local/bin/kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", "--request-timeout=20s"}, args...)...)
}

// e2eEtcdVersion is the etcd the test cluster runs.
const e2eEtcdVersion = "3.6.16"
