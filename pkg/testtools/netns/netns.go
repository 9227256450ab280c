// Package netns is a test harness of hosts in network namespaces: N hosts,
// each a namespace with one interface (eth0) on a shared bridge that lives
// in a namespace of its own, with addresses in a test-only range. Tests run
// commands or Go functions inside a host, dial from it, and cut a host off
// by setting its bridge port down. Everything is removed in t.Cleanup, also
// on failure; nothing touches the root namespace's links or routes.
package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	vnetns "github.com/vishvananda/netns"

	"github.com/kopsnode/agents/pkg/testtools"
)

// DefaultPrefix is the subnet of the hosts. Every Network has its own bridge
// in its own namespace, so several networks may use the same subnet.
var DefaultPrefix = netip.MustParsePrefix("10.231.0.0/24")

// Network is a bridge and its hosts.
type Network struct {
	// ID prefixes every namespace name of the network.
	ID     string
	Prefix netip.Prefix
	Hosts  []*Host
	// Gateway is the hosts' default route (Options.Gateway), else invalid.
	Gateway netip.Addr
	// HostAddr is the test process's address on the bridge
	// (Options.HostLink), else invalid.
	HostAddr netip.Addr
	bridge   string // namespace holding the bridge
}

// Host is one namespace on the bridge.
type Host struct {
	// NS is the namespace name, usable with `ip netns exec`.
	NS string
	// Addr is the host's address on eth0.
	Addr netip.Addr
	// port is the host's veth end in the bridge namespace.
	port string
	net  *Network
}

// Options configure NewWith.
type Options struct {
	// Hosts is the number of hosts (1 to 250); they get .1, .2, ...
	Hosts int
	// Prefix is the hosts' subnet; zero means DefaultPrefix. Networks whose
	// tests may run at the same time and use HostLink need their own prefix.
	Prefix netip.Prefix
	// Gateway gives the bridge namespace the prefix's last address and makes
	// it every host's default route. That namespace does not forward, so
	// traffic to any address outside the network ends there: hosts that
	// need a default route (kubelet, kube-proxy) get one, and nothing they
	// send leaves the test's namespaces.
	Gateway bool
	// HostLink connects the test process's own (root) namespace to the
	// bridge with a veth holding the prefix's second-to-last address
	// (HostAddr), so servers the test runs on the host (MinIO, an asset
	// mirror) are reachable from the hosts and the test reaches the hosts'
	// addresses directly. The root namespace gets only that link and its
	// connected route, both removed in t.Cleanup.
	HostLink bool
}

// New creates a network of n hosts with addresses .1, .2, ... of
// DefaultPrefix. It needs root (testtools.RequireRoot fails the test
// otherwise) and the ip command.
func New(t testing.TB, n int) *Network {
	t.Helper()
	return NewWith(t, Options{Hosts: n})
}

// NewWith creates a network as opts say.
func NewWith(t testing.TB, opts Options) *Network {
	t.Helper()
	testtools.RequireRoot(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("netns: the ip command (package iproute2) is required: %v", err)
	}
	n := opts.Hosts
	if n < 1 || n > 250 {
		t.Fatalf("netns: %d hosts; want 1 to 250", n)
	}
	prefix := opts.Prefix
	if !prefix.IsValid() {
		prefix = DefaultPrefix
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	nw := &Network{ID: "kn" + hex.EncodeToString(b[:]), Prefix: prefix}
	nw.bridge = nw.ID + "-br"
	addNS(t, nw.bridge)
	run(t, "ip", "-n", nw.bridge, "link", "set", "lo", "up")
	run(t, "ip", "-n", nw.bridge, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", nw.bridge, "link", "set", "br0", "up")
	last := lastAddr(prefix)
	if opts.Gateway {
		nw.Gateway = last
		run(t, "ip", "netns", "exec", nw.bridge, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
		run(t, "ip", "-n", nw.bridge, "addr", "add", fmt.Sprintf("%s/%d", last, prefix.Bits()), "dev", "br0")
	}
	if opts.HostLink {
		nw.HostAddr = last.Prev()
		sweepStaleHostLinks(t, nw.HostAddr)
		link := nw.ID + "-h"
		run(t, "ip", "link", "add", link, "type", "veth", "peer", "name", "host", "netns", nw.bridge)
		t.Cleanup(func() {
			// Gone with the bridge namespace already, unless that failed.
			exec.Command("ip", "link", "del", link).Run()
		})
		run(t, "ip", "-n", nw.bridge, "link", "set", "host", "master", "br0")
		run(t, "ip", "-n", nw.bridge, "link", "set", "host", "up")
		run(t, "ip", "addr", "add", fmt.Sprintf("%s/%d", nw.HostAddr, prefix.Bits()), "dev", link)
		run(t, "ip", "link", "set", link, "up")
	}
	addr := prefix.Addr()
	for i := 0; i < n; i++ {
		addr = addr.Next()
		h := &Host{NS: fmt.Sprintf("%s-h%d", nw.ID, i), Addr: addr, port: fmt.Sprintf("p%d", i), net: nw}
		addNS(t, h.NS)
		run(t, "ip", "-n", h.NS, "link", "set", "lo", "up")
		run(t, "ip", "-n", nw.bridge, "link", "add", h.port, "type", "veth", "peer", "name", "eth0", "netns", h.NS)
		run(t, "ip", "-n", nw.bridge, "link", "set", h.port, "master", "br0")
		run(t, "ip", "-n", nw.bridge, "link", "set", h.port, "up")
		run(t, "ip", "-n", h.NS, "addr", "add", fmt.Sprintf("%s/%d", h.Addr, prefix.Bits()), "dev", "eth0")
		run(t, "ip", "-n", h.NS, "link", "set", "eth0", "up")
		if opts.Gateway {
			run(t, "ip", "-n", h.NS, "route", "add", "default", "via", last.String())
		}
		nw.Hosts = append(nw.Hosts, h)
	}
	return nw
}

// staleLink matches the host links and namespaces this package names.
var staleLink = regexp.MustCompile(`^(kn[0-9a-f]{6})-h$`)

// sweepStaleHostLinks removes a host link of an earlier network that holds
// addr, with that network's namespaces: a test binary killed before its
// cleanup leaves them, and two links with one address make the host's
// replies leave through the dead one. Two live networks cannot share a
// host address, so a holder is always stale; one this package did not
// make is an error naming it.
func sweepStaleHostLinks(t testing.TB, addr netip.Addr) {
	t.Helper()
	out, err := exec.Command("ip", "-o", "-4", "addr", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("netns: listing addresses: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[3], addr.String()+"/") {
			continue
		}
		name, _, _ := strings.Cut(f[1], "@")
		m := staleLink.FindStringSubmatch(name)
		if m == nil {
			t.Fatalf("netns: %s is already assigned to %s in this namespace; remove it or choose another prefix", addr, name)
		}
		t.Logf("netns: removing stale host link %s and namespaces %s-* of a test that did not clean up", name, m[1])
		exec.Command("ip", "link", "del", name).Run()
		nsList, _ := exec.Command("ip", "netns", "list").Output()
		for _, l := range strings.Split(string(nsList), "\n") {
			if ns := strings.Fields(l); len(ns) > 0 && strings.HasPrefix(ns[0], m[1]+"-") {
				exec.Command("ip", "netns", "del", ns[0]).Run()
			}
		}
	}
}

// lastAddr is the last usable address of an IPv4 prefix (before broadcast).
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) | host
	v-- // broadcast
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// addNS creates a namespace and registers its removal (which also removes
// every link inside it) before anything else can fail.
func addNS(t testing.TB, name string) {
	t.Helper()
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("netns: removing namespace %s: %v: %s", name, err, out)
		}
	})
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("netns: %s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// Command returns a command that runs inside the host's namespace.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
}

// Do runs fn on an OS thread switched into the host's namespace. Sockets
// fn creates stay in that namespace; goroutines fn starts do not (they run
// on other threads), so fn should make its sockets itself.
func (h *Host) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is not unlocked: if switching back failed it must not
		// be reused, and the runtime discards a locked thread when the
		// goroutine exits.
		orig, err := vnetns.Get()
		if err != nil {
			errc <- fmt.Errorf("netns: current namespace: %w", err)
			return
		}
		defer orig.Close()
		ns, err := vnetns.GetFromName(h.NS)
		if err != nil {
			errc <- fmt.Errorf("netns: opening %s: %w", h.NS, err)
			return
		}
		defer ns.Close()
		if err := vnetns.Set(ns); err != nil {
			errc <- fmt.Errorf("netns: entering %s: %w", h.NS, err)
			return
		}
		err = fn()
		if serr := vnetns.Set(orig); serr == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// DialContext dials from inside the host's namespace.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens inside the host's namespace.
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := h.Do(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// HTTPClient returns a client whose connections are made from the host.
func (h *Host) HTTPClient() *http.Client {
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DialContext: h.DialContext, DisableKeepAlives: true},
	}
}

// Disconnect cuts the host off the bridge (its port goes down), as a
// pulled cable or a partition would.
func (h *Host) Disconnect() error { return h.setPort("down") }

// Reconnect undoes Disconnect.
func (h *Host) Reconnect() error { return h.setPort("up") }

func (h *Host) setPort(state string) error {
	out, err := exec.Command("ip", "-n", h.net.bridge, "link", "set", h.port, state).CombinedOutput()
	if err != nil {
		return fmt.Errorf("netns: setting %s of %s %s: %v: %s", h.port, h.NS, state, err, out)
	}
	return nil
}

// Exists reports whether a namespace of that name exists, for tests of
// cleanup.
func Exists(name string) bool {
	_, err := os.Stat("/run/netns/" + name)
	return err == nil
}
