// Package dnsserver is the cluster DNS server: authoritative for the
// cluster's internal zones, answering A and AAAA from the gossip records of
// live members with round-robin order, NXDOMAIN or NODATA with the SOA for
// names that do not exist, REFUSED for names outside its zones unless
// forwarding to the upstream resolvers is on (it is never an open
// resolver), over UDP and TCP with truncation that honours EDNS0.
package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures the server.
type Config struct {
	// Zones are the origins the server is authoritative for.
	Zones []string
	// Listen is the host:port for both UDP and TCP.
	Listen string
	// TTL of answers, and NegativeTTL of the SOA in negative answers.
	TTL         uint32
	NegativeTTL uint32
	// Forward sends queries outside the zones to Upstreams; off, they are
	// REFUSED.
	Forward bool
	// Upstreams are host:port resolvers; when Forward is on and this is
	// empty, the nameservers of ResolvConf are used.
	Upstreams  []string
	ResolvConf string
	// ForwardTimeout bounds one upstream exchange.
	ForwardTimeout time.Duration
	// MaxForwarding bounds forwarded queries in flight; more get SERVFAIL.
	MaxForwarding int
	// Registerer receives the server's metrics; nil for none.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// DefaultConfig returns defaults for zones listening on listen.
func DefaultConfig(listen string, zones ...string) Config {
	return Config{
		Zones:          zones,
		Listen:         listen,
		TTL:            30,
		NegativeTTL:    30,
		ResolvConf:     "/etc/resolv.conf",
		ForwardTimeout: 2 * time.Second,
		MaxForwarding:  256,
	}
}

// Validate returns every problem, naming the field.
func (c Config) Validate() error {
	var errs []error
	if len(c.Zones) == 0 {
		errs = append(errs, errors.New("dns.Zones: no zone"))
	}
	for i, z := range c.Zones {
		if _, ok := dns.IsDomainName(z); !ok || z == "" {
			errs = append(errs, fmt.Errorf("dns.Zones[%d]: %q is not a domain name", i, z))
		}
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("dns.Listen: %q: %w", c.Listen, err))
	}
	for i, u := range c.Upstreams {
		if _, _, err := net.SplitHostPort(u); err != nil {
			errs = append(errs, fmt.Errorf("dns.Upstreams[%d]: %q: %w", i, u, err))
		}
	}
	if c.Forward && c.ForwardTimeout <= 0 {
		errs = append(errs, fmt.Errorf("dns.ForwardTimeout: must be positive, got %s", c.ForwardTimeout))
	}
	if c.Forward && c.MaxForwarding <= 0 {
		errs = append(errs, fmt.Errorf("dns.MaxForwarding: must be positive, got %d", c.MaxForwarding))
	}
	return errors.Join(errs...)
}

// Handler answers DNS messages from the current zone snapshot. It is safe
// for concurrent use.
type Handler struct {
	cfg       Config
	log       *slog.Logger
	zones     atomic.Pointer[Zones]
	rr        atomic.Uint32
	upstreams []string
	fwdSem    chan struct{}
	queries   *prometheus.CounterVec
	counters  [dns.RcodeNotZone + 1][numKinds]prometheus.Counter
}

// NewHandler returns a handler serving an empty snapshot of cfg.Zones.
func NewHandler(cfg Config) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{cfg: cfg, log: cfg.Logger, upstreams: cfg.Upstreams}
	if cfg.Forward {
		if len(h.upstreams) == 0 {
			rc, err := dns.ClientConfigFromFile(cfg.ResolvConf)
			if err != nil {
				return nil, fmt.Errorf("dns forwarding: reading upstream resolvers from %s: %w", cfg.ResolvConf, err)
			}
			for _, s := range rc.Servers {
				h.upstreams = append(h.upstreams, net.JoinHostPort(s, rc.Port))
			}
			if len(h.upstreams) == 0 {
				return nil, fmt.Errorf("dns forwarding: no nameserver in %s", cfg.ResolvConf)
			}
		}
		h.fwdSem = make(chan struct{}, cfg.MaxForwarding)
	}
	h.queries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kopsnode_gossip_dns_responses_total",
		Help: "DNS responses by response code and kind (authoritative, forwarded, refused, malformed).",
	}, []string{"rcode", "kind"})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(h.queries); err != nil {
			return nil, err
		}
	}
	for rc := range h.counters {
		for k := range h.counters[rc] {
			h.counters[rc][k] = h.queries.WithLabelValues(dns.RcodeToString[rc], kindNames[k])
		}
	}
	h.SetZones(BuildZones(cfg.Zones, nil, 1, cfg.NegativeTTL))
	return h, nil
}

// Response kinds, the "kind" label of the responses counter.
const (
	kindAuthoritative = iota
	kindForwarded
	kindRefused
	kindMalformed
	numKinds
)

var kindNames = [numKinds]string{"authoritative", "forwarded", "refused", "malformed"}

// count increments the responses counter. The common rcodes' counters are
// resolved once: a label lookup per query costs measurable throughput.
func (h *Handler) count(rcode, kind int) {
	if rcode >= 0 && rcode < len(h.counters) {
		h.counters[rcode][kind].Inc()
		return
	}
	h.queries.WithLabelValues(dns.RcodeToString[rcode], kindNames[kind]).Inc()
}

// SetZones replaces the served snapshot.
func (h *Handler) SetZones(z *Zones) { h.zones.Store(z) }

// Zones returns the served snapshot.
func (h *Handler) Zones() *Zones { return h.zones.Load() }

// ServeDNS implements dns.Handler.
func (h *Handler) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	udp := true
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		udp = false
	}
	resp := h.Respond(context.Background(), req, udp)
	if resp == nil {
		return
	}
	_ = w.WriteMsg(resp)
}

// maxUDP is the largest UDP response we send, whatever EDNS0 offers (the
// 2020 DNS flag day value, which avoids fragmentation).
const maxUDP = 1232

// responseSize is the largest response the client accepts over UDP.
func responseSize(req *dns.Msg) int {
	if opt := req.IsEdns0(); opt != nil {
		s := int(opt.UDPSize())
		if s < dns.MinMsgSize {
			s = dns.MinMsgSize
		}
		if s > maxUDP {
			s = maxUDP
		}
		return s
	}
	return dns.MinMsgSize
}

// Answer answers a raw wire-format query: the whole path a packet takes,
// for fuzzing and for callers without a dns.Server. A query too short to
// carry a header gets no answer (nil); one that does not parse gets FORMERR.
func (h *Handler) Answer(ctx context.Context, raw []byte, udp bool) []byte {
	req := new(dns.Msg)
	if err := req.Unpack(raw); err != nil {
		var hdr dns.Header
		if len(raw) < 12 || raw[2]&0x80 != 0 { // too short, or a response
			return nil
		}
		hdr.Id = uint16(raw[0])<<8 | uint16(raw[1])
		m := new(dns.Msg)
		m.Id = hdr.Id
		m.Response = true
		m.Rcode = dns.RcodeFormatError
		h.count(dns.RcodeFormatError, kindMalformed)
		b, _ := m.Pack()
		return b
	}
	if req.Response {
		return nil
	}
	resp := h.Respond(ctx, req, udp)
	if resp == nil {
		return nil
	}
	b, err := resp.Pack()
	if err != nil {
		h.log.Debug("packing a DNS response", "err", err)
		return nil
	}
	return b
}

// Respond answers one query message; udp selects truncation to the client's
// advertised size. It returns nil for messages that must not be answered.
func (h *Handler) Respond(ctx context.Context, req *dns.Msg, udp bool) *dns.Msg {
	if req.Response {
		return nil
	}
	m := new(dns.Msg)
	m.Id = req.Id
	m.Response = true
	m.Opcode = req.Opcode
	m.RecursionDesired = req.RecursionDesired
	m.RecursionAvailable = h.cfg.Forward
	m.Compress = true
	kind := kindAuthoritative
	defer func() { h.count(m.Rcode, kind) }()
	opt := req.IsEdns0()
	finish := func() *dns.Msg {
		if opt != nil {
			m.SetEdns0(maxUDP, false) // Pack moves an extended rcode into it
		}
		if udp {
			m.Truncate(responseSize(req))
		}
		return m
	}
	if req.Opcode != dns.OpcodeQuery {
		m.Rcode = dns.RcodeNotImplemented
		kind = kindRefused
		return finish()
	}
	if opt != nil && opt.Version() != 0 {
		m.Rcode = dns.RcodeBadVers
		kind = kindRefused
		return finish()
	}
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		kind = kindMalformed
		return finish()
	}
	q := req.Question[0]
	m.Question = []dns.Question{q}
	name := strings.ToLower(q.Name)
	z := h.zones.Load().find(name)
	if z == nil || (q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY) {
		if z == nil && h.cfg.Forward && q.Qclass == dns.ClassINET {
			kind = kindForwarded
			if fm := h.forward(ctx, req); fm != nil {
				m = fm
				m.Id = req.Id
				m.Compress = true
				return finish()
			}
			m.Rcode = dns.RcodeServerFailure
			return finish()
		}
		m.Rcode = dns.RcodeRefused
		kind = kindRefused
		return finish()
	}
	m.Authoritative = true
	h.answer(m, z, name, q)
	return finish()
}

func (h *Handler) answer(m *dns.Msg, z *zone, name string, q dns.Question) {
	negative := func(rcode int) {
		m.Rcode = rcode
		m.Ns = []dns.RR{z.soa} // shared: packing only reads it
	}
	// Answers carry the query's spelling of the name (0x20 randomisation).
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: h.cfg.TTL}
	}
	e := z.names[name]
	if name == z.origin {
		switch q.Qtype {
		case dns.TypeSOA:
			soa := dns.Copy(z.soa).(*dns.SOA)
			soa.Hdr.Name = q.Name
			m.Answer = append(m.Answer, soa)
			return
		case dns.TypeNS:
			ns := dns.Copy(z.ns).(*dns.NS)
			ns.Hdr.Name = q.Name
			m.Answer = append(m.Answer, ns)
			return
		}
		if e == nil {
			negative(dns.RcodeSuccess)
			return
		}
	}
	if e == nil {
		if z.ents[name] {
			negative(dns.RcodeSuccess)
		} else {
			negative(dns.RcodeNameError)
		}
		return
	}
	start := h.rr.Add(1)
	switch q.Qtype {
	case dns.TypeA, dns.TypeANY:
		for i := range e.a {
			ip := e.a[(int(start)+i)%len(e.a)]
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: ip})
		}
	}
	switch q.Qtype {
	case dns.TypeAAAA, dns.TypeANY:
		for i := range e.aaaa {
			ip := e.aaaa[(int(start)+i)%len(e.aaaa)]
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: ip})
		}
	}
	if len(m.Answer) == 0 {
		negative(dns.RcodeSuccess) // NODATA
	}
}

// forward sends req to the upstreams in turn and returns the first answer,
// or nil when none answered or too many forwards are in flight.
func (h *Handler) forward(ctx context.Context, req *dns.Msg) *dns.Msg {
	select {
	case h.fwdSem <- struct{}{}:
		defer func() { <-h.fwdSem }()
	default:
		return nil
	}
	q := req.Copy()
	q.Id = dns.Id()
	for _, up := range h.upstreams {
		c := &dns.Client{Net: "udp", Timeout: h.cfg.ForwardTimeout, UDPSize: 4096}
		cctx, cancel := context.WithTimeout(ctx, h.cfg.ForwardTimeout)
		r, _, err := c.ExchangeContext(cctx, q, up)
		if err == nil && r.Truncated {
			c.Net = "tcp"
			r, _, err = c.ExchangeContext(cctx, q, up)
		}
		cancel()
		if err != nil {
			h.log.Debug("forwarding a DNS query", "upstream", up, "name", q.Question[0].Name, "err", err)
			continue
		}
		r.Authoritative = false
		r.RecursionAvailable = true
		extra := r.Extra[:0]
		for _, rr := range r.Extra {
			if rr.Header().Rrtype != dns.TypeOPT { // finish adds our own
				extra = append(extra, rr)
			}
		}
		r.Extra = extra
		return r
	}
	return nil
}

// Server is a running DNS server on UDP and TCP.
type Server struct {
	*Handler
	udp, tcp  *dns.Server
	udpAddr   net.Addr
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// Start listens on cfg.Listen (UDP and TCP, the same port; port 0 picks
// one free for both) and serves until Close.
func Start(cfg Config) (*Server, error) {
	h, err := NewHandler(cfg)
	if err != nil {
		return nil, err
	}
	pc, ln, err := listenBoth(cfg.Listen)
	if err != nil {
		return nil, err
	}
	s := &Server{Handler: h, udpAddr: pc.LocalAddr()}
	s.udp = &dns.Server{PacketConn: pc, Handler: h, UDPSize: maxUDP}
	s.tcp = &dns.Server{Listener: ln, Handler: h, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, IdleTimeout: func() time.Duration { return 10 * time.Second }}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		s.wg.Add(1)
		go func(srv *dns.Server) {
			defer s.wg.Done()
			if err := srv.ActivateAndServe(); err != nil {
				h.log.Error("dns server stopped", "listen", cfg.Listen, "err", err)
			}
		}(srv)
	}
	return s, nil
}

func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	for attempt := 0; attempt < 10; attempt++ {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("dns: listening on tcp %s: %w", addr, err)
		}
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		if err == nil {
			return pc, ln, nil
		}
		ln.Close()
		if _, port, _ := net.SplitHostPort(addr); port != "0" {
			return nil, nil, fmt.Errorf("dns: listening on udp %s: %w", addr, err)
		}
	}
	return nil, nil, fmt.Errorf("dns: no port free for both udp and tcp on %s", addr)
}

// Addr returns the host:port the server listens on.
func (s *Server) Addr() string { return s.udpAddr.String() }

// Close stops both listeners and waits for the serving goroutines. Safe to
// call twice.
func (s *Server) Close() error {
	var errs []error
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, srv := range []*dns.Server{s.udp, s.tcp} {
			if err := srv.ShutdownContext(ctx); err != nil {
				errs = append(errs, err)
			}
		}
	})
	s.wg.Wait()
	return errors.Join(errs...)
}
