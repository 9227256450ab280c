package podnet

import (
	"flag"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/gossip/hlc"
	"github.com/kopsnode/agents/gossip/records"
	"github.com/kopsnode/agents/pkg/flagargs"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

func rec(owner, value string, wall int64) records.View {
	return records.View{Record: records.Record{Owner: owner, Key: RecordKey, Value: []byte(value), Version: hlc.Timestamp{Wall: wall}}, OwnerAlive: true}
}

func pr(cidr, via string) string { return string(PodRange{CIDR: pfx(cidr), Via: addr(via)}.Encode()) }

func TestPodRangeRoundTripAndRefusals(t *testing.T) {
	p := PodRange{CIDR: pfx("100.96.3.0/24"), Via: addr("10.0.0.3")}
	got, err := ParsePodRange(p.Encode())
	if err != nil || got != p {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for _, bad := range []string{``, `{}`, `not json`, `{"cidr":"100.96.3.1/24","via":"10.0.0.3"}`, `{"cidr":"100.96.3.0/24"}`, `{"cidr":"100.96.3.0/24","via":"fd00::1"}`} {
		if _, err := ParsePodRange([]byte(bad)); err == nil {
			t.Errorf("ParsePodRange(%q) accepted", bad)
		}
	}
}

func TestDesiredRoutes(t *testing.T) {
	self := Self{Name: "a", Addr: addr("10.0.0.1"), Range: pfx("100.96.1.0/24"), Cluster: pfx("100.96.0.0/11")}
	cases := []struct {
		name    string
		recs    []records.View
		want    []Route
		skipped []string // owner: reason substring
	}{
		{"nothing", nil, nil, nil},
		{
			"two other nodes, own record and other keys ignored",
			[]records.View{
				rec("a", pr("100.96.1.0/24", "10.0.0.1"), 1),
				rec("c", pr("100.96.3.0/24", "10.0.0.3"), 1),
				rec("b", pr("100.96.2.0/24", "10.0.0.2"), 1),
				{Record: records.Record{Owner: "b", Key: "dns/b.zone.", Value: []byte("10.0.0.2")}},
			},
			[]Route{{Dst: pfx("100.96.2.0/24"), Via: addr("10.0.0.2"), Owner: "b"}, {Dst: pfx("100.96.3.0/24"), Via: addr("10.0.0.3"), Owner: "c"}},
			nil,
		},
		{
			"tombstone yields no route",
			[]records.View{{Record: records.Record{Owner: "b", Key: RecordKey, Deleted: true}}},
			nil, nil,
		},
		{
			"outside the cluster range, e.g. a default route, is refused",
			[]records.View{rec("b", pr("0.0.0.0/0", "10.0.0.2"), 1), rec("c", pr("10.1.0.0/24", "10.0.0.3"), 1)},
			nil, []string{"b: outside the cluster", "c: outside the cluster"},
		},
		{
			"overlap with own range and next hop of self refused",
			[]records.View{rec("b", pr("100.96.1.0/25", "10.0.0.2"), 1), rec("c", pr("100.96.3.0/24", "10.0.0.1"), 1)},
			nil, []string{"b: overlaps this node's own range", "c: this node's own address"},
		},
		{
			"next hop inside the pod range refused",
			[]records.View{rec("b", pr("100.96.2.0/24", "100.96.9.1"), 1)},
			nil, []string{"b: inside the pod range"},
		},
		{
			"malformed value named",
			[]records.View{rec("b", "garbage", 1)},
			nil, []string{"b: pod range record"},
		},
		{
			"two owners of one range: the newer record wins",
			[]records.View{rec("old", pr("100.96.2.0/24", "10.0.0.2"), 5), rec("new", pr("100.96.2.0/24", "10.0.0.9"), 7)},
			[]Route{{Dst: pfx("100.96.2.0/24"), Via: addr("10.0.0.9"), Owner: "new"}},
			[]string{"old: overlaps the newer range of new"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, skipped := DesiredRoutes(self, c.recs)
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("routes %v, want %v", got, c.want)
			}
			if len(skipped) != len(c.skipped) {
				t.Fatalf("skipped %+v, want %v", skipped, c.skipped)
			}
			for i, s := range skipped {
				owner, reason, _ := strings.Cut(c.skipped[i], ": ")
				if s.Owner != owner || !strings.Contains(s.Reason, reason) {
					t.Errorf("skipped[%d] = %+v, want %s: ...%s...", i, s, owner, reason)
				}
			}
		})
	}
	// Unknown own range: other nodes are still routed.
	got, _ := DesiredRoutes(Self{Name: "a", Addr: addr("10.0.0.1"), Cluster: pfx("100.96.0.0/11")}, []records.View{rec("b", pr("100.96.2.0/24", "10.0.0.2"), 1)})
	if len(got) != 1 {
		t.Fatalf("without an own range: %v", got)
	}
	// The outcome does not depend on the order of the table.
	recs := []records.View{rec("x", pr("100.96.2.0/24", "10.0.0.2"), 3), rec("y", pr("100.96.2.0/24", "10.0.0.3"), 3)}
	a, _ := DesiredRoutes(self, recs)
	b, _ := DesiredRoutes(self, []records.View{recs[1], recs[0]})
	if !reflect.DeepEqual(a, b) || len(a) != 1 || a[0].Owner != "y" {
		t.Fatalf("order-dependent or wrong tie break: %v vs %v", a, b)
	}
}

func TestDiff(t *testing.T) {
	r := func(dst, via string) Route { return Route{Dst: pfx(dst), Via: addr(via)} }
	cases := []struct {
		name            string
		have, want      []Route
		replace, remove []Route
	}{
		{"empty", nil, nil, nil, nil},
		{"add", nil, []Route{r("100.96.2.0/24", "10.0.0.2")}, []Route{r("100.96.2.0/24", "10.0.0.2")}, nil},
		{"unchanged", []Route{r("100.96.2.0/24", "10.0.0.2")}, []Route{r("100.96.2.0/24", "10.0.0.2")}, nil, nil},
		{"next hop changed", []Route{r("100.96.2.0/24", "10.0.0.2")}, []Route{r("100.96.2.0/24", "10.0.0.7")}, []Route{r("100.96.2.0/24", "10.0.0.7")}, nil},
		{"withdrawn", []Route{r("100.96.2.0/24", "10.0.0.2"), r("100.96.3.0/24", "10.0.0.3")}, []Route{r("100.96.3.0/24", "10.0.0.3")}, nil, []Route{r("100.96.2.0/24", "10.0.0.2")}},
		{
			"mixed, sorted",
			[]Route{r("100.96.9.0/24", "10.0.0.9"), r("100.96.4.0/24", "10.0.0.4")},
			[]Route{r("100.96.5.0/24", "10.0.0.5"), r("100.96.1.0/24", "10.0.0.1")},
			[]Route{r("100.96.1.0/24", "10.0.0.1"), r("100.96.5.0/24", "10.0.0.5")},
			[]Route{r("100.96.4.0/24", "10.0.0.4"), r("100.96.9.0/24", "10.0.0.9")},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rep, rem := Diff(c.have, c.want)
			if !reflect.DeepEqual(rep, c.replace) || !reflect.DeepEqual(rem, c.remove) {
				t.Fatalf("Diff = replace %v remove %v; want %v, %v", rep, rem, c.replace, c.remove)
			}
		})
	}
}

func TestMasqRulesAndComparison(t *testing.T) {
	rules := MasqRules(pfx("100.96.0.0/11"), pfx("100.64.0.0/10"))
	// What `iptables -t nat -S KOPSNODE-POD-MASQ` prints for them.
	listed := []string{
		"-N KOPSNODE-POD-MASQ",
		"-A KOPSNODE-POD-MASQ ! -s 100.96.0.0/11 -j RETURN",
		"-A KOPSNODE-POD-MASQ -d 100.64.0.0/10 -j RETURN",
		"-A KOPSNODE-POD-MASQ -j MASQUERADE",
	}
	if !sameRules(listed, rules) {
		t.Fatalf("the rules do not match their own listing:\n%q", rules)
	}
	for i := 1; i < len(listed); i++ {
		short := append(append([]string{}, listed[:i]...), listed[i+1:]...)
		if sameRules(short, rules) {
			t.Fatalf("a listing without %q compares equal", listed[i])
		}
	}
	swapped := []string{listed[0], listed[2], listed[1], listed[3]}
	if sameRules(swapped, rules) {
		t.Fatal("order is ignored")
	}
	if sameRules(append(listed, "-A KOPSNODE-POD-MASQ -j ACCEPT"), rules) {
		t.Fatal("an extra rule is ignored")
	}
}

func TestParseNodePodCIDR(t *testing.T) {
	if p, err := ParseNodePodCIDR("n", "100.96.4.0/24", nil); err != nil || p != pfx("100.96.4.0/24") {
		t.Fatalf("%v %v", p, err)
	}
	if p, err := ParseNodePodCIDR("n", "", []string{"fd00::/64", "100.96.5.0/24"}); err != nil || p != pfx("100.96.5.0/24") {
		t.Fatalf("dual stack: %v %v", p, err)
	}
	if _, err := ParseNodePodCIDR("n", "", nil); err == nil || !strings.Contains(err.Error(), "allocate-node-cidrs") {
		t.Fatalf("no range: %v", err)
	}
	if _, err := ParseNodePodCIDR("n", "bogus", nil); err == nil || !strings.Contains(err.Error(), "Node n") {
		t.Fatalf("bogus: %v", err)
	}
}

// Args is the exact inverse of AddFlags: for the defaults and for a value
// with every field changed, parsing the rendered flags into a fresh
// DefaultConfig gives the value back, and the full value sets every flag.
func TestConfigArgsParseBack(t *testing.T) {
	full := Config{Mode: ModeKubenet, Kubeconfig: "/k", NodeName: "ip-10-0-0-1", ClusterCIDR: "100.96.0.0/11",
		NonMasqueradeCIDR: "100.64.0.0/10", CNIConfDir: "/etc/cni/x", MTU: 9001, Resync: time.Minute}
	if err := full.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Config{DefaultConfig(), full} {
		got := DefaultConfig()
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		got.AddFlags(fs)
		if err := fs.Parse(c.Args()); err != nil {
			t.Fatalf("%q: %v", c.Args(), err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("parsed back %+v, want %+v", got, c)
		}
		if u := flagargs.Unset(fs); reflect.DeepEqual(c, full) && len(u) > 0 {
			t.Errorf("Args of a full configuration does not render %q", u)
		}
	}
	if a := DefaultConfig().Args(); a != nil {
		t.Fatalf("off renders %q", a)
	}
}

func TestConfigValidateNamesFlags(t *testing.T) {
	c := DefaultConfig()
	c.Mode = ModeKubenet
	c.ClusterCIDR = "100.96.0.1/11"
	c.NonMasqueradeCIDR = "10.0.0.0/8"
	c.MTU = 10
	c.Resync = 0
	c.Kubeconfig = ""
	err := c.Validate()
	for _, want := range []string{"--cluster-pod-cidr", "did you mean 100.96.0.0/11", "--pod-mtu", "--pod-network-resync", "--kubeconfig"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	c = DefaultConfig()
	c.Mode, c.ClusterCIDR, c.NonMasqueradeCIDR = ModeKubenet, "100.96.0.0/11", "10.0.0.0/8"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "does not contain") {
		t.Errorf("non-masquerade range without the pods: %v", err)
	}
	c.Mode = "calico"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--pod-network") {
		t.Errorf("bad mode: %v", err)
	}
}
