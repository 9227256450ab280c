package podnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteTable is the node's routing table, limited to the routes podnet
// owns (those marked with RouteProtocol in the main table).
type RouteTable interface {
	// List returns the installed routes podnet owns.
	List(ctx context.Context) ([]Route, error)
	// Replace adds the route, or changes the next hop of an existing one.
	Replace(ctx context.Context, r Route) error
	// Delete removes a route podnet owns.
	Delete(ctx context.Context, r Route) error
}

// Masquerader keeps the masquerade rules in place.
type Masquerader interface {
	// Ensure makes MasqChain hold exactly MasqRules(podRange, nonMasq) and
	// POSTROUTING jump to it once, changing nothing when they are right.
	Ensure(ctx context.Context, podRange, nonMasq netip.Prefix) error
}

// Netlink is the RouteTable of the current network namespace.
type Netlink struct{}

func (Netlink) filter() (*netlink.Route, uint64) {
	return &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_PROTOCOL | netlink.RT_FILTER_TABLE
}

// List implements RouteTable.
func (n Netlink) List(ctx context.Context) ([]Route, error) {
	f, mask := n.filter()
	var (
		rs  []netlink.Route
		err error
	)
	// A dump that raced a change is incomplete; a second try almost
	// always succeeds.
	for range 3 {
		rs, err = netlink.RouteListFiltered(netlink.FAMILY_ALL, f, mask)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("listing routes with protocol %d: %w", RouteProtocol, err)
	}
	out := make([]Route, 0, len(rs))
	for _, r := range rs {
		if r.Dst == nil {
			continue
		}
		dst, ok := prefixFromIPNet(r.Dst)
		via, ok2 := netip.AddrFromSlice(r.Gw)
		if !ok || !ok2 {
			continue
		}
		out = append(out, Route{Dst: dst, Via: via.Unmap()})
	}
	return out, nil
}

func (n Netlink) route(r Route) *netlink.Route {
	bits := 32
	if r.Dst.Addr().Is6() {
		bits = 128
	}
	return &netlink.Route{
		Dst:      &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), bits)},
		Gw:       r.Via.AsSlice(),
		Protocol: RouteProtocol,
		Table:    unix.RT_TABLE_MAIN,
	}
}

// Replace implements RouteTable.
func (n Netlink) Replace(ctx context.Context, r Route) error {
	if err := netlink.RouteReplace(n.route(r)); err != nil {
		return fmt.Errorf("route %s: %w", r, err)
	}
	return nil
}

// Delete implements RouteTable.
func (n Netlink) Delete(ctx context.Context, r Route) error {
	if err := netlink.RouteDel(n.route(r)); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("deleting route %s: %w", r, err)
	}
	return nil
}

func prefixFromIPNet(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones).Masked(), true
}

// IPTables is the Masquerader that runs iptables (go-iptables, which waits
// for the xtables lock, so it can run beside kube-proxy).
type IPTables struct {
	ipt *iptables.IPTables
}

// NewIPTables finds the iptables command for IPv4.
func NewIPTables() (*IPTables, error) {
	ipt, err := iptables.NewWithProtocol(iptables.ProtocolIPv4)
	if err != nil {
		return nil, fmt.Errorf("iptables (package iptables) is needed to masquerade pod traffic: %w", err)
	}
	return &IPTables{ipt: ipt}, nil
}

const natTable = "nat"

// Ensure implements Masquerader. The chain is rewritten only when its rules
// differ from the wanted ones (compared as `iptables -S` prints them), so
// a steady node runs only read commands.
func (t *IPTables) Ensure(ctx context.Context, podRange, nonMasq netip.Prefix) error {
	exists, err := t.ipt.ChainExists(natTable, MasqChain)
	if err != nil {
		return fmt.Errorf("iptables -t nat: checking chain %s: %w", MasqChain, err)
	}
	if !exists {
		if err := t.ipt.NewChain(natTable, MasqChain); err != nil {
			return fmt.Errorf("iptables -t nat: creating chain %s: %w", MasqChain, err)
		}
	}
	want := MasqRules(podRange, nonMasq)
	have, err := t.ipt.List(natTable, MasqChain)
	if err != nil {
		return fmt.Errorf("iptables -t nat: listing chain %s: %w", MasqChain, err)
	}
	if !sameRules(have, want) {
		if err := t.ipt.ClearChain(natTable, MasqChain); err != nil {
			return fmt.Errorf("iptables -t nat: clearing chain %s: %w", MasqChain, err)
		}
		for _, r := range want {
			if err := t.ipt.Append(natTable, MasqChain, r...); err != nil {
				return fmt.Errorf("iptables -t nat -A %s %s: %w", MasqChain, strings.Join(r, " "), err)
			}
		}
	}
	jump := MasqJump()
	ok, err := t.ipt.Exists(natTable, "POSTROUTING", jump...)
	if err != nil {
		return fmt.Errorf("iptables -t nat: checking the jump to %s in POSTROUTING: %w", MasqChain, err)
	}
	if !ok {
		if err := t.ipt.Append(natTable, "POSTROUTING", jump...); err != nil {
			return fmt.Errorf("iptables -t nat: adding the jump to %s in POSTROUTING: %w", MasqChain, err)
		}
	}
	return nil
}

// sameRules compares `iptables -S CHAIN` output ("-N CHAIN" then one
// "-A CHAIN ..." line per rule) with the wanted rules.
func sameRules(have []string, want [][]string) bool {
	var rules []string
	for _, l := range have {
		if strings.HasPrefix(l, "-A ") {
			rules = append(rules, l)
		}
	}
	if len(rules) != len(want) {
		return false
	}
	for i, r := range want {
		if rules[i] != "-A "+MasqChain+" "+strings.Join(r, " ") {
			return false
		}
	}
	return true
}
