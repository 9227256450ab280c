package gossipd

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/gossip/membership"
	"github.com/kopsnode/agents/pkg/store/file"
	"github.com/kopsnode/agents/pkg/testtools/netns"
	"github.com/kopsnode/agents/protokube/podnet"
)

// TestPodNetworkInNetworkNamespaces runs three gossip daemons with the pod
// network on (--pod-network=kubenet) as processes in three network
// namespaces on one bridge. Routes (netlink) and masquerade rules
// (iptables) are real, in each host's namespace. The Node object is a stub:
// kube-controller-manager, which allocates spec.podCIDR, is not part of
// this test, so each node's range is given to it (podnet.StaticNode) in
// place of reading its Node through the API; everything after that read is
// the production code.
//
// It checks: each host routes the other two ranges via their addresses;
// each writes the CNI configuration of its own range; a TCP connection
// from an address in host A's pod range reaches an address in host B's
// range, without masquerade inside the pod network; the masquerade rules
// are present once, stay so over repeated passes, and come back when
// removed by hand; a host that leaves has its route withdrawn everywhere.
func TestPodNetworkInNetworkNamespaces(t *testing.T) {
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Fatalf("this test needs the iptables command (Debian package iptables): %v", err)
	}
	nw := netns.New(t, 3)
	storeDir := t.TempDir()
	st, err := file.New(storeDir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := membership.WriteKeys(ctx, st, membership.KeysObject(testCluster), membership.KeySet{Primary: randomKey(t)}); err != nil {
		t.Fatal(err)
	}
	var seeds []string
	for _, h := range nw.Hosts {
		seeds = append(seeds, h.Addr.String()+":3996")
	}
	type podHost struct {
		*procNode
		rng     netip.Prefix
		podAddr netip.Addr // on cbr0, standing in for a pod
		cniDir  string
	}
	hosts := make([]*podHost, 3)
	for i, h := range nw.Hosts {
		rng := netip.MustParsePrefix(fmt.Sprintf("100.96.%d.0/24", i+1))
		pod := rng.Addr().Next()
		// The bridge the CNI plugin would create, with an address of the
		// node's range (dummy links are not available on every kernel).
		for _, args := range [][]string{
			{"link", "add", "cbr0", "type", "bridge"},
			{"link", "set", "cbr0", "up"},
			{"addr", "add", pod.String() + "/24", "dev", "cbr0"},
		} {
			if out, err := exec.Command("ip", append([]string{"-n", h.NS}, args...)...).CombinedOutput(); err != nil {
				t.Fatalf("ip -n %s %s: %v: %s", h.NS, strings.Join(args, " "), err, out)
			}
		}
		cniDir := t.TempDir()
		name := fmt.Sprintf("p%d", i)
		n := startProcNodeSpec(t, name, h, storeDir, seeds, testNodeSpec{PodCIDR: rng.String()}, func(c *Config) {
			c.LeaveGrace = time.Second
			c.PodNet.Mode = podnet.ModeKubenet
			c.PodNet.ClusterCIDR = "100.96.0.0/11"
			c.PodNet.NonMasqueradeCIDR = "100.64.0.0/10"
			c.PodNet.CNIConfDir = cniDir
			c.PodNet.Resync = 200 * time.Millisecond
		})
		hosts[i] = &podHost{procNode: n, rng: rng, podAddr: pod, cniDir: cniDir}
	}
	a, b, c := hosts[0], hosts[1], hosts[2]

	routesOf := func(h *podHost) (map[string]string, error) {
		out, err := exec.Command("ip", "-4", "-n", h.host.NS, "route", "show", "proto", fmt.Sprint(podnet.RouteProtocol)).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("ip route show: %v: %s", err, out)
		}
		got := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Fields(l)
			if len(f) >= 3 && f[1] == "via" {
				got[f[0]] = f[2]
			}
		}
		return got, nil
	}
	wantRoutes := func(h *podHost, others ...*podHost) error {
		got, err := routesOf(h)
		if err != nil {
			return err
		}
		want := map[string]string{}
		for _, o := range others {
			want[o.rng.String()] = o.host.Addr.String()
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("%s routes %v, want %v", h.name, got, want)
		}
		return nil
	}

	t.Run("routes to the other ranges", func(t *testing.T) {
		for _, h := range hosts {
			var others []*podHost
			for _, o := range hosts {
				if o != h {
					others = append(others, o)
				}
			}
			eventually(t, 30*time.Second, h.name+" routes the other two ranges", func() error { return wantRoutes(h, others...) })
			s, err := h.status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if s.PodNet == nil || s.PodNet.Range != h.rng.String() || len(s.PodNet.Routes) != 2 {
				t.Fatalf("%s status: %+v", h.name, s.PodNet)
			}
			conf, err := os.ReadFile(filepath.Join(h.cniDir, "10-kubenet.conflist"))
			if err != nil || !strings.Contains(string(conf), `"subnet": "`+h.rng.String()+`"`) {
				t.Fatalf("%s CNI configuration (%v):\n%s", h.name, err, conf)
			}
		}
	})

	t.Run("pod range to pod range over TCP", func(t *testing.T) {
		ln, err := b.host.Listen("tcp", net.JoinHostPort(b.podAddr.String(), "8080"))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		remote := make(chan string, 1)
		go func() {
			conn, err := ln.Accept()
			if err != nil {
				remote <- "accept: " + err.Error()
				return
			}
			defer conn.Close()
			remote <- conn.RemoteAddr().String()
			io.WriteString(conn, "hello from b's pod range\n")
		}()
		var got []byte
		err = a.host.Do(func() error {
			d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: a.podAddr.AsSlice()}}
			conn, err := d.Dial("tcp", net.JoinHostPort(b.podAddr.String(), "8080"))
			if err != nil {
				return err
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			got, err = io.ReadAll(conn)
			return err
		})
		if err != nil {
			t.Fatalf("connecting from %s (host A's pod range) to %s (host B's): %v", a.podAddr, b.podAddr, err)
		}
		if string(got) != "hello from b's pod range\n" {
			t.Fatalf("read %q", got)
		}
		if r := <-remote; !strings.HasPrefix(r, a.podAddr.String()+":") {
			t.Fatalf("B saw the connection from %s, want %s (pod to pod is not masqueraded)", r, a.podAddr)
		}
	})

	nat := func(h *podHost) (jumps, rules []string) {
		out, err := exec.Command("ip", "netns", "exec", h.host.NS, "iptables", "-t", "nat", "-S").CombinedOutput()
		if err != nil {
			t.Fatalf("iptables -t nat -S in %s: %v: %s", h.name, err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			switch {
			case strings.HasPrefix(l, "-A POSTROUTING") && strings.Contains(l, "-j "+podnet.MasqChain):
				jumps = append(jumps, l)
			case strings.HasPrefix(l, "-A "+podnet.MasqChain+" "):
				rules = append(rules, l)
			}
		}
		return jumps, rules
	}
	wantRules := []string{
		"-A KOPSNODE-POD-MASQ ! -s 100.96.0.0/11 -j RETURN",
		"-A KOPSNODE-POD-MASQ -d 100.64.0.0/10 -j RETURN",
		"-A KOPSNODE-POD-MASQ -j MASQUERADE",
	}
	checkNAT := func(h *podHost) error {
		jumps, rules := nat(h)
		if len(jumps) != 1 || !strings.Contains(jumps[0], podnet.MasqComment) {
			return fmt.Errorf("%s POSTROUTING jumps %q, want exactly one", h.name, jumps)
		}
		if strings.Join(rules, "\n") != strings.Join(wantRules, "\n") {
			return fmt.Errorf("%s chain rules:\n%s", h.name, strings.Join(rules, "\n"))
		}
		return nil
	}
	syncs := func(h *podHost) int {
		s, err := h.status(ctx)
		if err != nil || s.PodNet == nil {
			t.Fatalf("%s status: %v", h.name, err)
		}
		return s.PodNet.Syncs
	}

	t.Run("masquerade rules present and idempotent", func(t *testing.T) {
		for _, h := range hosts {
			eventually(t, 10*time.Second, h.name+" masquerade rules", func() error { return checkNAT(h) })
		}
		// Several more full passes (every 200 ms) change nothing.
		before := syncs(a)
		eventually(t, 10*time.Second, "five more passes on "+a.name, func() error {
			if syncs(a) < before+5 {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		if err := checkNAT(a); err != nil {
			t.Fatalf("after repeated passes: %v", err)
		}
		// Removed by hand, the jump comes back, once.
		jumps, _ := nat(a)
		del := append([]string{"netns", "exec", a.host.NS, "iptables", "-t", "nat", "-D"}, strings.Fields(strings.TrimPrefix(jumps[0], "-A "))...)
		if out, err := exec.Command("ip", del...).CombinedOutput(); err != nil {
			t.Fatalf("removing the jump: %v: %s", err, out)
		}
		eventually(t, 10*time.Second, "the jump restored on "+a.name, func() error { return checkNAT(a) })
	})

	t.Run("a host that leaves has its route withdrawn", func(t *testing.T) {
		c.stdin.Close() // c leaves the cluster and exits
		for _, h := range []*podHost{a, b} {
			var other *podHost = b
			if h == b {
				other = a
			}
			eventually(t, 20*time.Second, h.name+" withdraws the route to "+c.name+"'s range", func() error { return wantRoutes(h, other) })
		}
	})
}
