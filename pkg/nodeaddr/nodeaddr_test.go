package nodeaddr

import (
	"net"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/kopsnode/agents/pkg/testtools"
	"github.com/vishvananda/netns"
)

// TestPrimaryInNamespace builds a network namespace with a known address and
// default route, and checks that Primary returns that address there, and an
// error naming the problem in a namespace without a default route.
func TestPrimaryInNamespace(t *testing.T) {
	testtools.RequireRoot(t)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	name := "nodeaddr-test"
	run("netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })

	inNS := func() (net.IP, error) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		orig, err := netns.Get()
		if err != nil {
			t.Fatal(err)
		}
		defer orig.Close()
		ns, err := netns.GetFromName(name)
		if err != nil {
			t.Fatal(err)
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			t.Fatal(err)
		}
		defer netns.Set(orig)
		return Primary()
	}

	if ip, err := inNS(); err == nil {
		t.Fatalf("Primary() without a default route = %v, want an error", ip)
	} else if !strings.Contains(err.Error(), "set it explicitly") {
		t.Fatalf("error %q does not tell the operator what to do", err)
	}

	// A veth pair with both ends in the namespace (no dummy module here).
	run("-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer")
	run("-n", name, "addr", "add", "10.231.7.5/24", "dev", "eth0")
	run("-n", name, "link", "set", "eth0", "up")
	run("-n", name, "link", "set", "eth0peer", "up")
	run("-n", name, "route", "add", "default", "via", "10.231.7.1", "dev", "eth0")
	ip, err := inNS()
	if err != nil {
		t.Fatal(err)
	}
	if !ip.Equal(net.ParseIP("10.231.7.5")) {
		t.Fatalf("Primary() = %v, want 10.231.7.5", ip)
	}
}
