package gossipd

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/kopsnode/agents/gossip/membership"
	"github.com/kopsnode/agents/pkg/store/file"
	"github.com/kopsnode/agents/pkg/testtools/netns"
)

const testCluster = "netns.k8s.local"

type procNode struct {
	name  string
	host  *netns.Host
	cmd   *exec.Cmd
	stdin io.WriteCloser
	log   string
	hosts string
}

func (n *procNode) statusAddr() string { return n.host.Addr.String() + ":3993" }
func (n *procNode) dnsAddr() string    { return n.host.Addr.String() + ":5353" }

func (n *procNode) send(t testing.TB, line string) {
	t.Helper()
	if _, err := io.WriteString(n.stdin, line+"\n"); err != nil {
		t.Fatalf("%s: sending %q: %v", n.name, line, err)
	}
}

func (n *procNode) status(ctx context.Context) (Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return FetchStatus(ctx, n.host.HTTPClient(), n.statusAddr())
}

func randomKey(t testing.TB) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// startProcNode runs the test binary as a gossip node inside host.
func startProcNode(t testing.TB, name string, host *netns.Host, storeDir string, seeds []string, offset time.Duration, tune ...func(*Config)) *procNode {
	t.Helper()
	return startProcNodeSpec(t, name, host, storeDir, seeds, testNodeSpec{ClockOffset: offset}, tune...)
}

// startProcNodeSpec is startProcNode with the rest of the test node's spec.
func startProcNodeSpec(t testing.TB, name string, host *netns.Host, storeDir string, seeds []string, base testNodeSpec, tune ...func(*Config)) *procNode {
	t.Helper()
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Cluster = testCluster
	cfg.Store.URL = "file://" + storeDir
	cfg.NodeName = name
	cfg.Bind = host.Addr.String() + ":3996"
	cfg.Seeds = "static"
	cfg.StaticSeeds = seeds
	cfg.DNSListen = host.Addr.String() + ":5353"
	cfg.HostsFile = filepath.Join(dir, "hosts")
	cfg.StatusAddr = host.Addr.String() + ":3993"
	cfg.LeaveGrace = time.Second
	cfg.Fast = true
	for _, f := range tune {
		f(&cfg)
	}
	base.Config, base.StoreDir = cfg, storeDir
	spec, err := json.Marshal(base)
	if err != nil {
		t.Fatal(err)
	}
	n := &procNode{name: name, host: host, log: filepath.Join(dir, "log"), hosts: cfg.HostsFile}
	logf, err := os.Create(n.log)
	if err != nil {
		t.Fatal(err)
	}
	n.cmd = host.Command(context.Background(), os.Args[0], "-test.run=^$")
	n.cmd.Env = append(os.Environ(), nodeEnv+"="+string(spec))
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	n.stdin, err = n.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { n.cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		n.stdin.Close() // the node leaves and exits on EOF
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			n.cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(n.log)
			t.Logf("log of %s:\n%s", name, tail(string(b), 40))
		}
	})
	return n
}

func tail(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func memberState(st Status, name string) string {
	for _, m := range st.Members {
		if m.Name == name {
			return m.State
		}
	}
	return "absent"
}

func findRecord(st Status, owner, key string) (RecordStatus, bool) {
	for _, r := range st.Records {
		if r.Owner == owner && r.Key == key {
			return r, true
		}
	}
	return RecordStatus{}, false
}

// winner applies the Lookup rule of package records to a status document:
// the largest (version, owner) among the records of key; a tombstone hides it.
func winner(st Status, key string) (RecordStatus, bool) {
	var best *RecordStatus
	for i, r := range st.Records {
		if r.Key != key {
			continue
		}
		if best == nil || best.Version.Less(r.Version) || (best.Version == r.Version && best.Owner < r.Owner) {
			best = &st.Records[i]
		}
	}
	if best == nil || best.Deleted {
		return RecordStatus{}, false
	}
	return *best, true
}

func dnsQuery(t *testing.T, from *netns.Host, server, name string) (*dns.Msg, error) {
	var r *dns.Msg
	err := from.Do(func() error {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		c := &dns.Client{Timeout: 2 * time.Second}
		var err error
		r, _, err = c.Exchange(m, server)
		return err
	})
	return r, err
}

// TestGossipInNetworkNamespaces runs five gossip daemons as processes in
// five network namespaces on one bridge (and a sixth host with the wrong
// key) and checks, in order: records converge; a causally later write beats
// a node whose clock is 20 s ahead; a node an hour ahead cannot win; a
// partitioned member rejoins and merges; a killed member's records are
// withdrawn; a node without the key is refused.
func TestGossipInNetworkNamespaces(t *testing.T) {
	nw := netns.New(t, 6)
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
	for _, h := range nw.Hosts[:5] {
		seeds = append(seeds, h.Addr.String()+":3996")
	}
	offsets := []time.Duration{0, 0, 0, 20 * time.Second, time.Hour}
	nodes := make([]*procNode, 5)
	for i := range nodes {
		nodes[i] = startProcNode(t, fmt.Sprintf("n%d", i), nw.Hosts[i], storeDir, seeds, offsets[i])
	}
	n0 := nodes[0]
	honest := nodes[:4] // n4's clock is an hour ahead: its records are refused
	zone := "internal." + testCluster + "."

	t.Run("records converge", func(t *testing.T) {
		for _, n := range nodes {
			n := n
			eventually(t, 30*time.Second, n.name+" sees 5 alive members and the node records of n0..n3", func() error {
				s, err := n.status(ctx)
				if err != nil {
					return err
				}
				for _, m := range nodes {
					if st := memberState(s, m.name); st != "alive" {
						return fmt.Errorf("%s is %s", m.name, st)
					}
				}
				for _, m := range honest {
					if _, ok := findRecord(s, m.name, "dns/"+m.name+"."+zone); !ok {
						return fmt.Errorf("no node record of %s", m.name)
					}
				}
				return nil
			})
		}
		// The zone is rebuilt shortly after the records change.
		eventually(t, 5*time.Second, "n1 asking n0's DNS for n2", func() error {
			r, err := dnsQuery(t, nw.Hosts[1], n0.dnsAddr(), "n2."+zone)
			if err != nil {
				return err
			}
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != nw.Hosts[2].Addr.String() {
				return fmt.Errorf("answer %v", r)
			}
			return nil
		})
		eventually(t, 10*time.Second, "n0's hosts file lists n3", func() error {
			b, err := os.ReadFile(n0.hosts)
			if err != nil {
				return err
			}
			want := nw.Hosts[3].Addr.String() + "\tn3." + strings.TrimSuffix(zone, ".")
			if !strings.Contains(string(b), HostsBeginMarker) || !strings.Contains(string(b), want) {
				return fmt.Errorf("hosts file lacks %q:\n%s", want, b)
			}
			return nil
		})
	})

	t.Run("causally later write wins over a clock 20s ahead", func(t *testing.T) {
		nodes[3].send(t, "put leader n3")
		eventually(t, 10*time.Second, "n0 has n3's leader record", func() error {
			s, err := n0.status(ctx)
			if err != nil {
				return err
			}
			if _, ok := findRecord(s, "n3", "leader"); !ok {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		n0.send(t, "put leader n0")
		for _, n := range nodes[:4] {
			n := n
			eventually(t, 10*time.Second, n.name+" resolves leader to n0's later write", func() error {
				s, err := n.status(ctx)
				if err != nil {
					return err
				}
				if w, ok := winner(s, "leader"); !ok || w.Owner != "n0" {
					return fmt.Errorf("winner %+v", w)
				}
				return nil
			})
		}
	})

	t.Run("clock an hour ahead does not win", func(t *testing.T) {
		nodes[4].send(t, "put far n4")
		// n4 sees its own write; the honest nodes must never accept it.
		eventually(t, 10*time.Second, "n4 holds its own record", func() error {
			s, err := nodes[4].status(ctx)
			if err != nil {
				return err
			}
			if _, ok := findRecord(s, "n4", "far"); !ok {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		n0.send(t, "put far n0")
		for _, n := range honest {
			n := n
			eventually(t, 10*time.Second, n.name+" resolves far to n0 and holds nothing of n4", func() error {
				s, err := n.status(ctx)
				if err != nil {
					return err
				}
				if _, ok := findRecord(s, "n4", "far"); ok {
					t.Fatalf("%s accepted a record from a clock an hour ahead", n.name)
				}
				if w, ok := winner(s, "far"); !ok || w.Owner != "n0" {
					return fmt.Errorf("winner %+v", w)
				}
				return nil
			})
		}
	})

	t.Run("partitioned member rejoins and merges", func(t *testing.T) {
		p := nodes[2]
		if err := p.host.Disconnect(); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "n0 sees n2 gone and withdraws its records", func() error {
			s, err := n0.status(ctx)
			if err != nil {
				return err
			}
			if st := memberState(s, "n2"); st != "dead" {
				return fmt.Errorf("n2 is %s", st)
			}
			if _, ok := findRecord(s, "n2", "dns/n2."+zone); ok {
				return fmt.Errorf("n2's record still held")
			}
			return nil
		})
		p.send(t, "put written-in-partition n2")
		n0.send(t, "put written-outside n0")
		if err := p.host.Reconnect(); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "n0 and n2 merge both sides' writes", func() error {
			s0, err := n0.status(ctx)
			if err != nil {
				return err
			}
			s2, err := p.status(ctx)
			if err != nil {
				return err
			}
			if st := memberState(s0, "n2"); st != "alive" {
				return fmt.Errorf("n0 sees n2 %s", st)
			}
			if _, ok := findRecord(s0, "n2", "written-in-partition"); !ok {
				return fmt.Errorf("n0 lacks n2's partition write")
			}
			if _, ok := findRecord(s0, "n2", "dns/n2."+zone); !ok {
				return fmt.Errorf("n0 lacks n2's node record")
			}
			if _, ok := findRecord(s2, "n0", "written-outside"); !ok {
				return fmt.Errorf("n2 lacks n0's write")
			}
			return nil
		})
	})

	t.Run("killed member's records are withdrawn", func(t *testing.T) {
		k := nodes[1]
		if err := k.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for _, n := range []*procNode{nodes[0], nodes[2], nodes[3]} {
			n := n
			eventually(t, 20*time.Second, n.name+" withdraws n1's records", func() error {
				s, err := n.status(ctx)
				if err != nil {
					return err
				}
				if st := memberState(s, "n1"); st != "dead" {
					return fmt.Errorf("n1 is %s", st)
				}
				for _, r := range s.Records {
					if r.Owner == "n1" {
						return fmt.Errorf("still holds %s", r.Key)
					}
				}
				return nil
			})
		}
		eventually(t, 5*time.Second, "n0's DNS answers NXDOMAIN for n1", func() error {
			r, err := dnsQuery(t, nw.Hosts[0], n0.dnsAddr(), "n1."+zone)
			if err != nil {
				return err
			}
			if r.Rcode != dns.RcodeNameError {
				return fmt.Errorf("rcode %s answers %v", dns.RcodeToString[r.Rcode], r.Answer)
			}
			return nil
		})
	})

	t.Run("node without the key is refused", func(t *testing.T) {
		otherStore := t.TempDir()
		ost, err := file.New(otherStore, file.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := membership.WriteKeys(ctx, ost, membership.KeysObject(testCluster), membership.KeySet{Primary: randomKey(t)}); err != nil {
			t.Fatal(err)
		}
		in := startProcNode(t, "intruder", nw.Hosts[5], otherStore, seeds, 0)
		eventually(t, 10*time.Second, "the intruder serves its status", func() error { _, err := in.status(ctx); return err })
		// The intruder retries its seeds every 500 ms; over several rounds
		// neither side may learn of the other.
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			si, err := in.status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(si.Members) != 1 {
				t.Fatalf("intruder sees members %v", si.Members)
			}
			for _, r := range si.Records {
				if r.Owner != "intruder" {
					t.Fatalf("intruder received %s/%s", r.Owner, r.Key)
				}
			}
			s0, err := n0.status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st := memberState(s0, "intruder"); st != "absent" {
				t.Fatalf("n0 sees the intruder as %s", st)
			}
			time.Sleep(200 * time.Millisecond)
		}
		b, _ := os.ReadFile(in.log)
		if !strings.Contains(string(b), "No installed keys could decrypt") && !strings.Contains(string(b), "decrypt") {
			t.Logf("intruder log does not mention decryption failures:\n%s", tail(string(b), 10))
		}
	})
}
