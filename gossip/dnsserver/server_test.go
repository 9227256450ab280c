package dnsserver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/kopsnode/agents/gossip/hlc"
	"github.com/kopsnode/agents/gossip/records"
)

const zoneName = "internal.test.k8s.local."

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

func testZones() *Zones {
	names := map[string][]netip.Addr{
		"api." + zoneName:         addrs("10.0.0.1", "10.0.0.2", "10.0.0.3", "fd00::1"),
		"etcd-a.etcd." + zoneName: addrs("10.0.0.1"),
		"v6only." + zoneName:      addrs("fd00::2"),
		"outside.example.":        addrs("192.0.2.1"),
		"big." + zoneName:         nil,
	}
	for i := 0; i < 200; i++ {
		names["big."+zoneName] = append(names["big."+zoneName], netip.AddrFrom4([4]byte{10, 1, byte(i / 250), byte(i%250 + 1)}))
	}
	return BuildZones([]string{zoneName}, names, 7, 30)
}

func startServer(t *testing.T, cfg Config, z *Zones) *Server {
	t.Helper()
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if z != nil {
		s.SetZones(z)
	}
	return s
}

func query(t *testing.T, addr, netw, name string, qtype uint16, edns uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	c := &dns.Client{Net: netw, UDPSize: 65535}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s query %s %s: %v", netw, name, dns.TypeToString[qtype], err)
	}
	return r
}

func answerIPs(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		switch v := rr.(type) {
		case *dns.A:
			out = append(out, v.A.String())
		case *dns.AAAA:
			out = append(out, v.AAAA.String())
		}
	}
	return out
}

func hasSOA(r *dns.Msg) bool {
	return len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA && r.Ns[0].Header().Name == zoneName
}

func TestAuthoritativeAnswersOverUDPAndTCP(t *testing.T) {
	s := startServer(t, DefaultConfig("127.0.0.1:0", zoneName), testZones())
	for _, netw := range []string{"udp", "tcp"} {
		t.Run(netw, func(t *testing.T) {
			r := query(t, s.Addr(), netw, "api."+zoneName, dns.TypeA, 0)
			got := answerIPs(r)
			sort.Strings(got)
			if r.Rcode != dns.RcodeSuccess || !r.Authoritative || strings.Join(got, ",") != "10.0.0.1,10.0.0.2,10.0.0.3" {
				t.Fatalf("A api: rcode %s aa %v answers %v", dns.RcodeToString[r.Rcode], r.Authoritative, got)
			}
			r = query(t, s.Addr(), netw, "API."+strings.ToUpper(zoneName), dns.TypeAAAA, 0)
			if got := answerIPs(r); len(got) != 1 || got[0] != "fd00::1" {
				t.Fatalf("AAAA API (upper case): %v", got)
			}
			if r.Answer[0].Header().Name != "API."+strings.ToUpper(zoneName) {
				t.Fatalf("answer name %q does not keep the query's case", r.Answer[0].Header().Name)
			}
		})
	}
}

func TestRoundRobin(t *testing.T) {
	s := startServer(t, DefaultConfig("127.0.0.1:0", zoneName), testZones())
	firsts := map[string]bool{}
	for i := 0; i < 6; i++ {
		firsts[answerIPs(query(t, s.Addr(), "udp", "api."+zoneName, dns.TypeA, 0))[0]] = true
	}
	if len(firsts) != 3 {
		t.Fatalf("first answers over 6 queries: %v, want all 3 addresses to lead in turn", firsts)
	}
}

func TestNegativeAnswers(t *testing.T) {
	s := startServer(t, DefaultConfig("127.0.0.1:0", zoneName), testZones())
	cases := []struct {
		name  string
		qtype uint16
		rcode int
	}{
		{"missing." + zoneName, dns.TypeA, dns.RcodeNameError},
		{"deep.missing." + zoneName, dns.TypeAAAA, dns.RcodeNameError},
		{"v6only." + zoneName, dns.TypeA, dns.RcodeSuccess}, // NODATA
		{"api." + zoneName, dns.TypeMX, dns.RcodeSuccess},   // NODATA
		{"etcd." + zoneName, dns.TypeA, dns.RcodeSuccess},   // empty non-terminal
		{zoneName, dns.TypeA, dns.RcodeSuccess},             // apex without addresses
	}
	for _, c := range cases {
		r := query(t, s.Addr(), "udp", c.name, c.qtype, 0)
		if r.Rcode != c.rcode || len(r.Answer) != 0 || !hasSOA(r) || !r.Authoritative {
			t.Errorf("%s %s: rcode %s answers %d authority %v aa %v; want %s, no answer, the SOA",
				c.name, dns.TypeToString[c.qtype], dns.RcodeToString[r.Rcode], len(r.Answer), r.Ns, r.Authoritative, dns.RcodeToString[c.rcode])
		}
	}
	r := query(t, s.Addr(), "udp", zoneName, dns.TypeSOA, 0)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.SOA).Serial != 7 {
		t.Fatalf("SOA at apex: %v", r.Answer)
	}
}

func TestNotAnOpenResolver(t *testing.T) {
	s := startServer(t, DefaultConfig("127.0.0.1:0", zoneName), testZones())
	for _, name := range []string{"example.com.", "outside.example.", "k8s.local."} {
		r := query(t, s.Addr(), "udp", name, dns.TypeA, 0)
		if r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 || r.RecursionAvailable {
			t.Errorf("%s: rcode %s, %d answers, ra %v; want REFUSED", name, dns.RcodeToString[r.Rcode], len(r.Answer), r.RecursionAvailable)
		}
	}
}

func TestForwardingToUpstream(t *testing.T) {
	up := startServer(t, DefaultConfig("127.0.0.1:0", "example."), BuildZones([]string{"example."}, map[string][]netip.Addr{"outside.example.": addrs("192.0.2.1")}, 1, 30))
	cfg := DefaultConfig("127.0.0.1:0", zoneName)
	cfg.Forward = true
	cfg.Upstreams = []string{"127.0.0.1:1", up.Addr()} // the first does not answer
	cfg.ForwardTimeout = 300_000_000
	s := startServer(t, cfg, testZones())
	r := query(t, s.Addr(), "udp", "outside.example.", dns.TypeA, 1232)
	if r.Rcode != dns.RcodeSuccess || len(answerIPs(r)) != 1 || answerIPs(r)[0] != "192.0.2.1" || r.Authoritative {
		t.Fatalf("forwarded answer: rcode %s answers %v aa %v", dns.RcodeToString[r.Rcode], answerIPs(r), r.Authoritative)
	}
	if n := len(r.Extra); n != 1 {
		t.Fatalf("forwarded answer carries %d extra records, want exactly one OPT", n)
	}
	// Names in our zone are still answered authoritatively.
	if r := query(t, s.Addr(), "udp", "missing."+zoneName, dns.TypeA, 0); r.Rcode != dns.RcodeNameError {
		t.Fatalf("in-zone NXDOMAIN with forwarding on: %s", dns.RcodeToString[r.Rcode])
	}
}

func TestForwardingReadsResolvConf(t *testing.T) {
	up := startServer(t, DefaultConfig("127.0.0.1:0", "example."), BuildZones([]string{"example."}, map[string][]netip.Addr{"outside.example.": addrs("192.0.2.1")}, 1, 30))
	host, port, _ := net.SplitHostPort(up.Addr())
	rc := t.TempDir() + "/resolv.conf"
	writeFile(t, rc, fmt.Sprintf("nameserver %s\noptions ndots:1\n", host))
	cfg := DefaultConfig("127.0.0.1:0", zoneName)
	cfg.Forward = true
	cfg.ResolvConf = rc
	h, err := NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.upstreams) != 1 || h.upstreams[0] != net.JoinHostPort(host, "53") {
		t.Fatalf("upstreams from %s = %v (port %s ignored as resolv.conf has none)", rc, h.upstreams, port)
	}
}

func TestTruncationHonoursEDNS0(t *testing.T) {
	s := startServer(t, DefaultConfig("127.0.0.1:0", zoneName), testZones())
	plain := query(t, s.Addr(), "udp", "big."+zoneName, dns.TypeA, 0)
	if !plain.Truncated || len(plain.Answer) >= 200 {
		t.Fatalf("512-byte client: tc %v with %d answers, want truncation", plain.Truncated, len(plain.Answer))
	}
	plain.Compress = true // as sent
	if b, _ := plain.Pack(); len(b) > 512 {
		t.Fatalf("UDP answer of %d bytes to a client without EDNS0", len(b))
	}
	edns := query(t, s.Addr(), "udp", "big."+zoneName, dns.TypeA, 1232)
	if !edns.Truncated || len(edns.Answer) <= len(plain.Answer) {
		t.Fatalf("EDNS0 1232 client: tc %v with %d answers (plain had %d)", edns.Truncated, len(edns.Answer), len(plain.Answer))
	}
	tcp := query(t, s.Addr(), "tcp", "big."+zoneName, dns.TypeA, 0)
	if tcp.Truncated || len(tcp.Answer) != 200 {
		t.Fatalf("TCP: tc %v with %d answers, want all 200", tcp.Truncated, len(tcp.Answer))
	}
}

func TestOddQueries(t *testing.T) {
	h, err := NewHandler(DefaultConfig("127.0.0.1:0", zoneName))
	if err != nil {
		t.Fatal(err)
	}
	h.SetZones(testZones())
	ctx := context.Background()
	two := new(dns.Msg)
	two.SetQuestion("api."+zoneName, dns.TypeA)
	two.Question = append(two.Question, two.Question[0])
	if r := h.Respond(ctx, two, true); r.Rcode != dns.RcodeFormatError {
		t.Errorf("two questions: %s", dns.RcodeToString[r.Rcode])
	}
	upd := new(dns.Msg)
	upd.SetUpdate(zoneName)
	if r := h.Respond(ctx, upd, true); r.Rcode != dns.RcodeNotImplemented {
		t.Errorf("UPDATE: %s", dns.RcodeToString[r.Rcode])
	}
	v1 := new(dns.Msg)
	v1.SetQuestion("api."+zoneName, dns.TypeA)
	v1.SetEdns0(1232, false)
	v1.IsEdns0().SetVersion(1)
	r := h.Respond(ctx, v1, true)
	b, err := r.Pack()
	if err != nil {
		t.Fatal(err)
	}
	back := new(dns.Msg)
	if err := back.Unpack(b); err != nil || back.Rcode != dns.RcodeBadVers {
		t.Errorf("EDNS version 1: rcode %s err %v, want BADVERS", dns.RcodeToString[back.Rcode], err)
	}
	if h.Answer(ctx, []byte{1, 2, 3}, true) != nil {
		t.Error("answered a 3-byte packet")
	}
	garbage := []byte{0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xff}
	resp := new(dns.Msg)
	if err := resp.Unpack(h.Answer(ctx, garbage, true)); err != nil || resp.Rcode != dns.RcodeFormatError || resp.Id != 0xabcd {
		t.Errorf("garbage query: %v rcode %s id %x, want FORMERR with the query id", err, dns.RcodeToString[resp.Rcode], resp.Id)
	}
}

func TestZoneFromRecordsServesOnlyLiveOwners(t *testing.T) {
	views := []records.View{
		{Record: records.Record{Owner: "a", Key: RecordKey("api." + zoneName), Value: []byte("10.0.0.1"), Version: hlc.Timestamp{Wall: 1}}, OwnerAlive: true},
		{Record: records.Record{Owner: "b", Key: RecordKey("API." + zoneName), Value: []byte("10.0.0.2, fd00::2"), Version: hlc.Timestamp{Wall: 1}}, OwnerAlive: true},
		{Record: records.Record{Owner: "dead", Key: RecordKey("api." + zoneName), Value: []byte("10.0.0.9"), Version: hlc.Timestamp{Wall: 1}}, OwnerAlive: false},
		{Record: records.Record{Owner: "c", Key: RecordKey("api." + zoneName), Deleted: true, Version: hlc.Timestamp{Wall: 1}}, OwnerAlive: true},
		{Record: records.Record{Owner: "c", Key: RecordKey("bad." + zoneName), Value: []byte("not-an-ip"), Version: hlc.Timestamp{Wall: 1}}, OwnerAlive: true},
	}
	var bad []string
	names := NamesFromRecords(views, func(key, owner string, err error) { bad = append(bad, owner+" "+key) })
	z := BuildZones([]string{zoneName}, names, 1, 30)
	e := z.find("api." + zoneName).names["api."+zoneName]
	if e == nil || len(e.a) != 2 || len(e.aaaa) != 1 {
		t.Fatalf("api entry = %+v, want a's and b's addresses only", e)
	}
	if len(bad) != 1 {
		t.Fatalf("bad values reported: %v, want the one of c", bad)
	}
}

// FuzzDNSHandler feeds raw wire bytes to the handler: it never panics, and
// every answer parses, echoes the query id, is a response, and fits the
// client's UDP size.
func FuzzDNSHandler(f *testing.F) {
	seed := func(name string, qtype uint16, edns uint16) []byte {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		if edns > 0 {
			m.SetEdns0(edns, true)
		}
		b, _ := m.Pack()
		return b
	}
	f.Add(seed("api."+zoneName, dns.TypeA, 0))
	f.Add(seed("big."+zoneName, dns.TypeA, 0))
	f.Add(seed("big."+zoneName, dns.TypeANY, 4096))
	f.Add(seed("missing."+zoneName, dns.TypeAAAA, 1232))
	f.Add(seed("example.com.", dns.TypeMX, 0))
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0})
	h, err := NewHandler(DefaultConfig("127.0.0.1:0", zoneName))
	if err != nil {
		f.Fatal(err)
	}
	h.SetZones(testZones())
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, udp := range []bool{true, false} {
			out := h.Answer(ctx, raw, udp)
			if out == nil {
				continue
			}
			resp := new(dns.Msg)
			if err := resp.Unpack(out); err != nil {
				t.Fatalf("answer does not parse: %v", err)
			}
			if len(raw) < 2 || resp.Id != uint16(raw[0])<<8|uint16(raw[1]) || !resp.Response {
				t.Fatalf("answer id %x response %v for query id % x", resp.Id, resp.Response, raw[:2])
			}
			if udp {
				limit := 512
				req := new(dns.Msg)
				if req.Unpack(raw) == nil {
					limit = responseSize(req)
				}
				if len(out) > limit {
					t.Fatalf("UDP answer of %d bytes exceeds the client's %d", len(out), limit)
				}
			}
		}
	})
}
