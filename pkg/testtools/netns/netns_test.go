package netns

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestHostsReachEachOtherAndDisconnectCutsOff(t *testing.T) {
	nw := New(t, 3)
	a, b := nw.Hosts[0], nw.Hosts[1]
	if a.Addr.String() != "10.231.0.1" || nw.Hosts[2].Addr.String() != "10.231.0.3" {
		t.Fatalf("addresses %s, %s", a.Addr, nw.Hosts[2].Addr)
	}
	ln, err := b.Listen("tcp", b.Addr.String()+":7000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "hello from b\n")
			c.Close()
		}
	}()
	dial := func(timeout time.Duration) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		c, err := a.DialContext(ctx, "tcp", b.Addr.String()+":7000")
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		s, err := io.ReadAll(c)
		return string(s), err
	}
	if got, err := dial(5 * time.Second); err != nil || got != "hello from b\n" {
		t.Fatalf("a dialing b: %q, %v", got, err)
	}
	if err := b.Disconnect(); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(500 * time.Millisecond); err == nil {
		t.Fatal("a reached b after b was disconnected")
	}
	if err := b.Reconnect(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := dial(time.Second)
		if err == nil && got == "hello from b\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a cannot reach b after reconnecting: %v", err)
		}
	}
}

func TestCommandRunsInsideHost(t *testing.T) {
	nw := New(t, 1)
	out, err := nw.Hosts[0].Command(context.Background(), "ip", "-4", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "10.231.0.1/24") {
		t.Fatalf("ip addr inside the host: %v: %s", err, out)
	}
}

func TestCleanupRemovesNamespaces(t *testing.T) {
	var names []string
	t.Run("make", func(t *testing.T) {
		nw := New(t, 2)
		names = append(names, nw.bridge)
		for _, h := range nw.Hosts {
			names = append(names, h.NS)
			if !Exists(h.NS) {
				t.Fatalf("namespace %s missing", h.NS)
			}
		}
	})
	for _, n := range names {
		if Exists(n) {
			t.Errorf("namespace %s left after the test", n)
		}
	}
}

// TestHostLinkAndGateway: the test process reaches a host and a host
// reaches a server on the test process's address; every host has a default
// route through the gateway, which forwards nothing.
func TestHostLinkAndGateway(t *testing.T) {
	nw := NewWith(t, Options{Hosts: 2, Prefix: netip.MustParsePrefix("10.239.7.0/24"), Gateway: true, HostLink: true})
	if nw.Gateway.String() != "10.239.7.254" || nw.HostAddr.String() != "10.239.7.253" {
		t.Fatalf("gateway %s, host address %s", nw.Gateway, nw.HostAddr)
	}
	ln, err := net.Listen("tcp", nw.HostAddr.String()+":0")
	if err != nil {
		t.Fatalf("listening on the host link: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "hello from the test process\n")
			c.Close()
		}
	}()
	h := nw.Hosts[1]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := h.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("host dialing the test process: %v", err)
	}
	got, _ := io.ReadAll(c)
	c.Close()
	if string(got) != "hello from the test process\n" {
		t.Fatalf("host read %q", got)
	}
	// The test process reaches the host's address directly.
	hl, err := h.Listen("tcp", h.Addr.String()+":7001")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hl.Close() })
	go func() {
		if c, err := hl.Accept(); err == nil {
			c.Close()
		}
	}()
	d := net.Dialer{Timeout: 5 * time.Second}
	if c, err := d.Dial("tcp", h.Addr.String()+":7001"); err != nil {
		t.Fatalf("test process dialing host %s: %v", h.Addr, err)
	} else {
		c.Close()
	}
	out, err := h.Command(ctx, "ip", "route", "show", "default").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "via 10.239.7.254") {
		t.Fatalf("default route in host: %q, %v", out, err)
	}
	fwd, err := exec.Command("ip", "netns", "exec", nw.bridge, "sysctl", "-n", "net.ipv4.ip_forward").CombinedOutput()
	if err != nil || strings.TrimSpace(string(fwd)) != "0" {
		t.Fatalf("gateway namespace forwards (ip_forward=%q, %v): traffic could leave the test's namespaces", fwd, err)
	}
}

// TestHostLinkSweepsStaleLink: a host link and namespace left with the same
// address by a killed test are removed, and the new network works.
func TestHostLinkSweepsStaleLink(t *testing.T) {
	prefix := netip.MustParsePrefix("10.239.8.0/24")
	stale := "kn0badc0"
	for _, args := range [][]string{
		{"netns", "add", stale + "-br"},
		{"link", "add", stale + "-h", "type", "veth", "peer", "name", "host", "netns", stale + "-br"},
		{"addr", "add", "10.239.8.253/24", "dev", stale + "-h"},
		{"link", "set", stale + "-h", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", stale+"-h").Run()
		exec.Command("ip", "netns", "del", stale+"-br").Run()
	})
	nw := NewWith(t, Options{Hosts: 1, Prefix: prefix, HostLink: true})
	if Exists(stale + "-br") {
		t.Errorf("stale namespace %s-br was kept", stale)
	}
	if out, _ := exec.Command("ip", "link", "show", stale+"-h").CombinedOutput(); !strings.Contains(string(out), "does not exist") {
		t.Errorf("stale link kept: %s", out)
	}
	ln, err := net.Listen("tcp", nw.HostAddr.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := nw.Hosts[0].DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("host cannot reach the test process after the sweep: %v", err)
	}
	c.Close()
}
