// Package podnet is kubenet-mode pod networking across nodes without a cloud
// route table: each node learns its own pod range from its Node object,
// writes the CNI configuration for it, publishes it as a gossip record, and
// routes every other node's range via that node's address. Traffic from pods
// that leaves the non-masquerade range is masqueraded. It runs inside
// `protokube gossip`, which owns the record table it publishes to and reads.
//
// The decisions (which routes a node wants, what to change, which iptables
// rules it needs) are pure functions in this file; the effects sit behind
// the RouteTable, Masquerader and NodeSource interfaces.
package podnet

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"

	"github.com/kopsnode/agents/gossip/records"
)

// RecordKey is the gossip record in which a node publishes its pod range.
// Every node owns its own record under this key.
const RecordKey = "podcidr"

// RouteProtocol marks the routes podnet installs (the rtm_protocol field,
// `ip route show proto 0xa5`). podnet lists, replaces and deletes only
// routes with this mark, so it never touches a route it did not install.
// The value is unassigned in iproute2's rt_protos and by the common routing
// daemons (bird 12, zebra 11, dhcp 16, keepalived 18, calico 80, babel 42).
const RouteProtocol = 0xa5

// PodRange is the value of a node's RecordKey record.
type PodRange struct {
	// CIDR is the node's pod range (the Node's spec.podCIDR).
	CIDR netip.Prefix `json:"cidr"`
	// Via is the node's address: the next hop of the route to CIDR.
	Via netip.Addr `json:"via"`
}

// Encode returns the record value.
func (p PodRange) Encode() []byte {
	b, _ := json.Marshal(p) // netip types always marshal
	return b
}

// ParsePodRange decodes and checks a record value.
func ParsePodRange(b []byte) (PodRange, error) {
	var p PodRange
	if err := json.Unmarshal(b, &p); err != nil {
		return PodRange{}, fmt.Errorf("pod range record %q: %w", b, err)
	}
	if !p.CIDR.IsValid() || p.CIDR.Masked() != p.CIDR {
		return PodRange{}, fmt.Errorf("pod range record %q: cidr is not a network address", b)
	}
	if !p.Via.IsValid() || p.Via.Is4() != p.CIDR.Addr().Is4() {
		return PodRange{}, fmt.Errorf("pod range record %q: via is not an address of the cidr's family", b)
	}
	return p, nil
}

// Route is a route podnet wants or has: Dst via the gateway Via.
type Route struct {
	Dst netip.Prefix `json:"dst"`
	Via netip.Addr   `json:"via"`
	// Owner is the node whose record asked for the route (empty for routes
	// read back from the kernel).
	Owner string `json:"owner,omitempty"`
}

func (r Route) String() string { return r.Dst.String() + " via " + r.Via.String() }

// Self is what a node knows about itself when it decides its routes.
type Self struct {
	// Name is the node's gossip name: the owner of its own record.
	Name string
	// Addr is the node's address (its next hop for the others).
	Addr netip.Addr
	// Range is the node's own pod range; invalid while unknown.
	Range netip.Prefix
	// Cluster is the cluster's pod range; every route must lie inside it,
	// so a record can never route, say, the default route elsewhere.
	Cluster netip.Prefix
}

// Skipped is a record that yields no route, and why.
type Skipped struct {
	Owner  string `json:"owner"`
	Value  string `json:"value"`
	Reason string `json:"reason"`
}

// DesiredRoutes returns the routes a node wants from the record table: one
// per other node's pod range, sorted by destination. Records that cannot be
// routed are returned in skipped with the reason. When two nodes claim
// overlapping ranges (a range reassigned by the controller manager before
// the old owner's record was withdrawn), the newer record wins.
func DesiredRoutes(self Self, recs []records.View) (routes []Route, skipped []Skipped) {
	type cand struct {
		rec records.View
		pr  PodRange
	}
	var cands []cand
	for _, v := range recs {
		if v.Key != RecordKey || v.Deleted || v.Owner == self.Name {
			continue
		}
		skip := func(reason string) {
			skipped = append(skipped, Skipped{Owner: v.Owner, Value: string(v.Value), Reason: reason})
		}
		pr, err := ParsePodRange(v.Value)
		switch {
		case err != nil:
			skip(err.Error())
		case !self.Cluster.IsValid() || !prefixContains(self.Cluster, pr.CIDR):
			skip(fmt.Sprintf("%s is outside the cluster's pod range %s", pr.CIDR, self.Cluster))
		case self.Range.IsValid() && self.Range.Overlaps(pr.CIDR):
			skip(fmt.Sprintf("%s overlaps this node's own range %s", pr.CIDR, self.Range))
		case pr.Via == self.Addr:
			skip(fmt.Sprintf("next hop %s is this node's own address", pr.Via))
		case self.Cluster.Contains(pr.Via):
			skip(fmt.Sprintf("next hop %s lies inside the pod range", pr.Via))
		default:
			cands = append(cands, cand{v, pr})
		}
	}
	// Newest record first, ties by owner, so the outcome is the same on
	// every node whatever order the table lists records in.
	sort.Slice(cands, func(i, j int) bool {
		a, b := cands[i].rec, cands[j].rec
		if a.Version != b.Version {
			return b.Version.Less(a.Version)
		}
		return a.Owner > b.Owner
	})
	for _, c := range cands {
		clash := ""
		for _, r := range routes {
			if r.Dst.Overlaps(c.pr.CIDR) {
				clash = r.Owner
				break
			}
		}
		if clash != "" {
			skipped = append(skipped, Skipped{Owner: c.rec.Owner, Value: string(c.rec.Value), Reason: fmt.Sprintf("%s overlaps the newer range of %s", c.pr.CIDR, clash)})
			continue
		}
		routes = append(routes, Route{Dst: c.pr.CIDR, Via: c.pr.Via, Owner: c.rec.Owner})
	}
	sort.Slice(routes, func(i, j int) bool { return routes[i].Dst.String() < routes[j].Dst.String() })
	sort.Slice(skipped, func(i, j int) bool { return skipped[i].Owner < skipped[j].Owner })
	return routes, skipped
}

// Diff returns what turns the installed routes (have, all marked with
// RouteProtocol) into want: routes to add or replace (new destination, or a
// changed next hop), and routes to delete (destinations no longer wanted).
// Both are sorted by destination.
func Diff(have, want []Route) (replace, remove []Route) {
	cur := map[netip.Prefix]netip.Addr{}
	for _, r := range have {
		cur[r.Dst] = r.Via
	}
	wanted := map[netip.Prefix]bool{}
	for _, r := range want {
		wanted[r.Dst] = true
		if via, ok := cur[r.Dst]; !ok || via != r.Via {
			replace = append(replace, r)
		}
	}
	for _, r := range have {
		if !wanted[r.Dst] {
			remove = append(remove, r)
		}
	}
	byDst := func(rs []Route) {
		sort.Slice(rs, func(i, j int) bool { return rs[i].Dst.String() < rs[j].Dst.String() })
	}
	byDst(replace)
	byDst(remove)
	return replace, remove
}

// MasqChain is the nat chain that holds podnet's masquerade rules; a single
// jump from POSTROUTING leads to it.
const MasqChain = "KOPSNODE-POD-MASQ"

// MasqComment marks podnet's jump in POSTROUTING.
const MasqComment = "kopsnode-pod-masquerade"

// MasqRules returns the rules of MasqChain, in order: traffic that does not
// come from the cluster's pod range, or that goes to the non-masquerade
// range (pods, services, and whatever else the operator routes without
// NAT), is left alone; the rest, pod traffic leaving the pod network, is
// masqueraded behind the node's address.
func MasqRules(podRange, nonMasq netip.Prefix) [][]string {
	return [][]string{
		{"!", "-s", podRange.String(), "-j", "RETURN"},
		{"-d", nonMasq.String(), "-j", "RETURN"},
		{"-j", "MASQUERADE"},
	}
}

// MasqJump is the POSTROUTING rule that sends traffic to MasqChain.
func MasqJump() []string {
	return []string{"-m", "comment", "--comment", MasqComment, "-j", MasqChain}
}

// prefixContains reports whether inner lies inside outer.
func prefixContains(outer, inner netip.Prefix) bool {
	return outer.Addr().Is4() == inner.Addr().Is4() && outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}
