package aws_test

import (
	"strings"
	"testing"

	awsvol "github.com/kopsnode/agents/volumes/aws"
	"github.com/kopsnode/agents/volumes/aws/ec2local"
)

// SlotPeers reports every attached volume with its holder's state and
// private address, this instance's own included; unattached volumes are
// left out. A stopped holder reports stopped (not Running) and a
// terminated one's volume, detached by EC2, is not reported.
func TestSlotPeers(t *testing.T) {
	e := newEnv(t, ec2local.XenNaming, 0)
	ctx := ctxT(t)
	p, self := e.machine(t, zoneA)
	tags := func(slot string) map[string]string {
		return map[string]string{"kubernetes.io/cluster/c1": "owned", awsvol.EtcdClusterTag: "main", awsvol.SlotTag: slot}
	}
	running := e.srv.AddInstance(zoneA, nil)
	stopped := e.srv.AddInstance(zoneB, nil)
	terminated := e.srv.AddInstance(zoneA, nil)
	for i, h := range []string{self, running, stopped, terminated} {
		v := e.srv.AddVolume(zoneA, 1, tags("main-"+string(rune('1'+i))))
		if err := e.srv.AttachNow(v, h, "/dev/xvdf"); err != nil {
			t.Fatal(err)
		}
	}
	e.srv.AddVolume(zoneA, 1, tags("main-5")) // not attached
	if err := e.srv.SetPrivateIP(running, "127.0.0.9"); err != nil {
		t.Fatal(err)
	}
	for id, st := range map[string]string{stopped: ec2local.InstanceStopped, terminated: ec2local.InstanceTerminated} {
		if err := e.srv.SetInstanceState(id, st); err != nil {
			t.Fatal(err)
		}
	}
	ps, err := p.SlotPeers(ctx, "c1", "main")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, sp := range ps {
		got = append(got, sp.Slot+" "+sp.Instance+" "+sp.InstanceState+" "+sp.PrivateIP)
		if sp.Running() != (sp.InstanceState == "running") {
			t.Fatalf("%+v: Running() = %v", sp, sp.Running())
		}
	}
	want := []string{
		"main-1 " + self + " running 10.0.0.2",
		"main-2 " + running + " running 127.0.0.9",
		"main-3 " + stopped + " stopped 10.0.0.4",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("SlotPeers:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
