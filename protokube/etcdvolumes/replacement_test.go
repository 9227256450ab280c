package etcdvolumes

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	emh "github.com/kopsnode/agents/etcd-manager/harness"
	"github.com/kopsnode/agents/etcd-manager/identity"
	"github.com/kopsnode/agents/pkg/testtools"
	"github.com/kopsnode/agents/volumes/mount"
)

// TestReplacementMachineBringsMemberBack runs the whole chain with real
// parts: three machines, each with its own disk (a loop device), run
// etcd-volumes against one store; each claims a slot, formats and mounts
// its disk, and only then "systemd" (the fake manager's start hook) starts
// a real etcd-manager with real etcd on the mount, taking its identity from
// the volume as `etcd-manager run` does without --id (identity.FromVolume).
// Then machine 2 dies and its disk moves to a replacement machine with a
// new host name and a new address: the replacement waits for the dead
// machine's slot lease to lapse, adopts slot main-2 and its volume, and its
// etcd-manager brings member main-2 back, data intact, without any
// operator action.
func TestReplacementMachineBringsMemberBack(t *testing.T) {
	testtools.RequireRoot(t)
	const version = "3.6.16"
	storeDir, cluster := t.TempDir(), testCluster(t)
	h := newMachine(t, "/dev/null", machineOpts{cluster: cluster, store: storeDir}) // the store handle
	c := emh.New(t, emh.Options{IPPrefix: "127.44.170", Store: h.st, Cluster: cluster, Versions: []string{version}})
	c.SetSpec(3, version)

	// machine runs etcd-volumes (its loop, which renews the slot lease)
	// for a machine named name at address ip with disk dev, its "systemd"
	// starting a real etcd-manager.
	machine := func(name, ip, dev string) (*harness, *Daemon) {
		m := newMachine(t, dev, machineOpts{cluster: cluster, machine: name, members: 3, store: storeDir})
		// Long enough that the dead machine's lease cannot lapse while the
		// test moves its disk and starts the replacement on a loaded box.
		m.cfg.SlotLease = 15 * time.Second
		m.cfg.Interval = 500 * time.Millisecond
		m.cfg.MaxBackoff = 500 * time.Millisecond
		m.mgr.onStart = func(string) error {
			id, err := identity.FromVolume(m.target, cluster, "main")
			if err != nil {
				return err
			}
			cfg := c.Config(id, ip)
			cfg.ID, cfg.DataDir = id, m.target
			c.StartWith(cfg)
			return nil
		}
		t.Cleanup(c.StopAll) // before the volume is unmounted
		d, err := Start(context.Background(), m.cfg, m.node, m.deps())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return m, d
	}
	ready := func(d *Daemon, what string) MemberStatus {
		t.Helper()
		var m MemberStatus
		c.Eventually(60*time.Second, what, func() error {
			st := d.Status()
			if m = onlyMember(t, st); !st.Ready {
				return fmt.Errorf("not ready: %s", m.Error)
			}
			return nil
		})
		return m
	}

	devs := []string{loopDeviceSize(t, 256<<20), loopDeviceSize(t, 256<<20), loopDeviceSize(t, 256<<20)}
	var machines []*harness
	var deadDaemon *Daemon
	for i, dev := range devs {
		m, r := machine(fmt.Sprintf("machine-%d", i+1), c.IP(i+1), dev)
		if i == 1 {
			deadDaemon = r
		}
		st := ready(r, m.machine+" ready")
		if want := fmt.Sprintf("main-%d", i+1); st.Slot != want {
			t.Fatalf("%s holds slot %s, want %s", m.machine, st.Slot, want)
		}
		machines = append(machines, m)
	}
	c.WaitMembers(90*time.Second, "main-1", "main-2", "main-3")
	c.Put("/before", "kept")

	// Machine 2 dies (its etcd-volumes stops renewing the lease); its disk
	// is moved to the replacement.
	dead := machines[1]
	deadDaemon.Close()
	c.Kill("main-2")
	if err := mount.Unmount(dead.target); err != nil {
		t.Fatal(err)
	}
	d, r := machine("replacement-4", c.IP(4), devs[1])
	// Its first passes find the slot still held by the dead machine, and
	// nothing is started.
	c.Eventually(10*time.Second, "the replacement waiting for the dead machine's lease", func() error {
		m := onlyMember(t, r.Status())
		if m.Ready || d.mgr.Starts(d.unit) != 0 {
			t.Fatalf("the replacement did not wait for the dead machine's lease: %+v", m)
		}
		if !strings.Contains(m.Error, "held by machine machine-2") {
			return fmt.Errorf("status %+v", m)
		}
		return nil
	})
	st := ready(r, "the replacement ready")
	if st.Slot != "main-2" || st.Device != devs[1] {
		t.Fatalf("replacement holds %+v, want slot main-2 on %s", st, devs[1])
	}
	if l := d.lease(t, "main-2"); l.Holder != "replacement-4" {
		t.Fatalf("lease of main-2: %+v", l)
	}
	c.WaitMembers(120*time.Second, "main-1", "main-2", "main-3")
	c.ExpectKey(30*time.Second, "/before", "kept", "main-1", "main-2", "main-3")
	c.Put("/after", "written")
	c.ExpectKey(30*time.Second, "/after", "written", "main-2")
	if in := c.Instance("main-2"); in == nil || in.IP != c.IP(4) || in.DataDir != d.target {
		t.Fatalf("member main-2 runs as %+v, want the replacement's address %s and volume %s", in, c.IP(4), d.target)
	}
}
