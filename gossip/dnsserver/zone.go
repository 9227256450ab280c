package dnsserver

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"

	"github.com/miekg/dns"

	"github.com/kopsnode/agents/gossip/records"
)

// KeyPrefix is the prefix of the gossip records the DNS server serves. A
// record "dns/<fqdn>" holds a comma-separated list of IPv4 and IPv6
// addresses for that name.
const KeyPrefix = "dns/"

// RecordKey returns the gossip record key for a DNS name.
func RecordKey(name string) string { return KeyPrefix + strings.ToLower(dns.Fqdn(name)) }

// FormatAddrs returns the record value for addresses.
func FormatAddrs(addrs []netip.Addr) []byte {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return []byte(strings.Join(s, ","))
}

// nameEntry holds the addresses of one name.
type nameEntry struct {
	a    []net.IP
	aaaa []net.IP
}

// zone is one authoritative zone.
type zone struct {
	origin string // lowercase FQDN
	names  map[string]*nameEntry
	// ents are empty non-terminals: names that exist only because a longer
	// name does. They answer NODATA, not NXDOMAIN.
	ents map[string]bool
	soa  *dns.SOA
	ns   *dns.NS
}

// Zones is an immutable snapshot of every zone the server is authoritative
// for. Build one with BuildZones; the server swaps snapshots atomically.
type Zones struct {
	zones []*zone // longest origin first
}

// Serial is the SOA serial of built zones; callers pass an increasing number.
type Serial = uint32

// BuildZones builds a snapshot: origins are the zones, names maps an FQDN to
// its addresses. Names outside every zone are ignored. It is a pure function.
func BuildZones(origins []string, names map[string][]netip.Addr, serial Serial, negTTL uint32) *Zones {
	zs := &Zones{}
	for _, o := range origins {
		o = strings.ToLower(dns.Fqdn(o))
		z := &zone{origin: o, names: map[string]*nameEntry{}, ents: map[string]bool{}}
		z.soa = &dns.SOA{
			Hdr:     dns.RR_Header{Name: o, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: negTTL},
			Ns:      "ns." + o,
			Mbox:    "hostmaster." + o,
			Serial:  serial,
			Refresh: 3600, Retry: 600, Expire: 86400, Minttl: negTTL,
		}
		z.ns = &dns.NS{Hdr: dns.RR_Header{Name: o, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: 3600}, Ns: "ns." + o}
		zs.zones = append(zs.zones, z)
	}
	sort.Slice(zs.zones, func(i, j int) bool { return len(zs.zones[i].origin) > len(zs.zones[j].origin) })
	for name, addrs := range names {
		name = strings.ToLower(dns.Fqdn(name))
		z := zs.find(name)
		if z == nil {
			continue
		}
		e := z.names[name]
		if e == nil {
			e = &nameEntry{}
			z.names[name] = e
		}
		for _, a := range addrs {
			if a.Is4() || a.Is4In6() {
				e.a = append(e.a, net.IP(a.Unmap().AsSlice()))
			} else {
				e.aaaa = append(e.aaaa, net.IP(a.AsSlice()))
			}
		}
		// Every ancestor between the name and the origin exists.
		for p := name; p != z.origin; {
			i := strings.IndexByte(p, '.')
			if i < 0 || i+1 >= len(p) {
				break
			}
			p = p[i+1:]
			if p != z.origin {
				z.ents[p] = true
			}
		}
	}
	for _, z := range zs.zones {
		for _, e := range z.names {
			sortIPs(e.a)
			sortIPs(e.aaaa)
		}
	}
	return zs
}

func sortIPs(ips []net.IP) {
	sort.Slice(ips, func(i, j int) bool { return string(ips[i]) < string(ips[j]) })
	// Drop duplicates published by several owners.
	out := ips[:0]
	for i, ip := range ips {
		if i == 0 || !ip.Equal(ips[i-1]) {
			out = append(out, ip)
		}
	}
	copy(ips, out)
}

// find returns the zone that name (lowercase FQDN) belongs to.
func (zs *Zones) find(name string) *zone {
	for _, z := range zs.zones {
		if name == z.origin || strings.HasSuffix(name, "."+z.origin) || z.origin == "." {
			return z
		}
	}
	return nil
}

// Names returns how many names the snapshot serves.
func (zs *Zones) Names() int {
	n := 0
	for _, z := range zs.zones {
		n += len(z.names)
	}
	return n
}

// NamesFromRecords collects the DNS names of live records whose owner is a
// live member: the healthy members' addresses. Malformed values are skipped
// and reported through bad.
func NamesFromRecords(views []records.View, bad func(key, owner string, err error)) map[string][]netip.Addr {
	names := map[string][]netip.Addr{}
	for _, v := range views {
		if v.Deleted || !v.OwnerAlive || !strings.HasPrefix(v.Key, KeyPrefix) {
			continue
		}
		name := strings.TrimPrefix(v.Key, KeyPrefix)
		if _, ok := dns.IsDomainName(name); !ok {
			if bad != nil {
				bad(v.Key, v.Owner, fmt.Errorf("%q is not a domain name", name))
			}
			continue
		}
		for _, s := range strings.Split(string(v.Value), ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			a, err := netip.ParseAddr(s)
			if err != nil {
				if bad != nil {
					bad(v.Key, v.Owner, err)
				}
				continue
			}
			names[name] = append(names[name], a)
		}
	}
	return names
}
