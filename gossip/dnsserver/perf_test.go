package dnsserver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/kopsnode/agents/pkg/testtools"
)

// BenchmarkDNSPerfVsCoreDNS runs dnsperf (Debian package dnsperf) for a
// bounded time against this server and against CoreDNS (built by make
// tools) serving the same names from a hosts file, alternating rounds in
// the same run, and reports both mean query rates. Both listen on 127.0.0.1.
func BenchmarkDNSPerfVsCoreDNS(b *testing.B) {
	dnsperf, err := exec.LookPath("dnsperf")
	if err != nil {
		b.Fatalf("dnsperf not found (apt-get install dnsperf): %v", err)
	}
	coredns := testtools.Binary(b, "coredns")
	const zone = "internal.bench.k8s.local."
	const nNames = 200
	dir := b.TempDir()
	names := map[string][]netip.Addr{}
	var hostsFile, queries strings.Builder
	for i := 0; i < nNames; i++ {
		name := fmt.Sprintf("node-%03d.%s", i, zone)
		a := netip.AddrFrom4([4]byte{10, 2, byte(i / 250), byte(i%250 + 1)})
		names[name] = []netip.Addr{a}
		fmt.Fprintf(&hostsFile, "%s %s\n", a, strings.TrimSuffix(name, "."))
		fmt.Fprintf(&queries, "%s A\n", name)
	}
	writeFileB(b, filepath.Join(dir, "hosts"), hostsFile.String())
	writeFileB(b, filepath.Join(dir, "queries"), queries.String())

	ours, err := Start(DefaultConfig("127.0.0.1:0", zone))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ours.Close() })
	ours.SetZones(BuildZones([]string{zone}, names, 1, 30))

	port := freeUDPPort(b)
	corefile := fmt.Sprintf("%s:%d {\n\tbind 127.0.0.1\n\thosts %s %s {\n\t\tttl 30\n\t}\n}\n", zone, port, filepath.Join(dir, "hosts"), zone)
	writeFileB(b, filepath.Join(dir, "Corefile"), corefile)
	cmd := exec.Command(coredns, "-conf", filepath.Join(dir, "Corefile"))
	cmd.Dir = dir
	out, _ := os.Create(filepath.Join(dir, "coredns.log"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		out.Close()
	})
	coreAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	waitAnswers(b, coreAddr, "node-001."+zone)
	waitAnswers(b, ours.Addr(), "node-001."+zone)

	run := func(addr string) float64 {
		host, p, _ := net.SplitHostPort(addr)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := exec.CommandContext(ctx, dnsperf, "-s", host, "-p", p, "-d", filepath.Join(dir, "queries"), "-l", "3", "-c", "4", "-T", "2", "-q", "200").CombinedOutput()
		if err != nil {
			b.Fatalf("dnsperf against %s: %v\n%s", addr, err, res)
		}
		m := regexp.MustCompile(`Queries per second:\s+([0-9.]+)`).FindSubmatch(res)
		lost := regexp.MustCompile(`Queries lost:\s+(\d+)`).FindSubmatch(res)
		if m == nil {
			b.Fatalf("no rate in dnsperf output:\n%s", res)
		}
		if lost != nil && string(lost[1]) != "0" {
			b.Logf("dnsperf against %s lost %s queries", addr, lost[1])
		}
		qps, _ := strconv.ParseFloat(string(m[1]), 64)
		return qps
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Alternate three rounds of each so that noise from the rest of
		// the machine falls on both servers alike.
		var oursQPS, coreQPS float64
		for round := 0; round < 3; round++ {
			oursQPS += run(ours.Addr()) / 3
			coreQPS += run(coreAddr) / 3
		}
		b.ReportMetric(oursQPS, "qps-ours")
		b.ReportMetric(coreQPS, "qps-coredns")
		b.ReportMetric(oursQPS/coreQPS, "ours/coredns")
		b.Logf("dnsperf 3 rounds of 3 s each: ours %.0f qps, CoreDNS %.0f qps (%.2fx)", oursQPS, coreQPS, oursQPS/coreQPS)
	}
}

func writeFileB(b testing.TB, path, content string) {
	b.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		b.Fatal(err)
	}
}

func freeUDPPort(tb testing.TB) int {
	tb.Helper()
	for i := 0; i < 20; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	tb.Fatal("no free port for both UDP and TCP")
	return 0
}

func waitAnswers(tb testing.TB, addr, name string) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		r, _, err := (&dns.Client{Timeout: 500 * time.Millisecond}).Exchange(m, addr)
		if err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s does not answer %s: %v %v", addr, name, r, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
