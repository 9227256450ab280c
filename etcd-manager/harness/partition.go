package harness

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-iptables/iptables"

	"github.com/kopsnode/agents/pkg/testtools"
)

// cgroup2Root finds where the cgroup v2 hierarchy is mounted.
func cgroup2Root() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, fl := range fields {
			if fl == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" {
				return fields[4], nil
			}
		}
	}
	return "", fmt.Errorf("no cgroup2 mount in /proc/self/mountinfo")
}

// Partition cuts instance id off the network with real packet dropping:
// every packet to or from its address is dropped, and so is every packet
// its etcd process sends (the process is moved into its own cgroup and
// matched with the iptables cgroup match, because etcd dials its peers
// from 127.0.0.1, not from its own address). The returned function heals
// the partition; it also runs in t.Cleanup. Needs root.
func (c *Cluster) Partition(id string) (heal func()) {
	c.t.Helper()
	testtools.RequireRoot(c.t)
	in := c.Instance(id)
	if in == nil {
		c.t.Fatalf("no running instance %s", id)
	}
	pid := in.M.EtcdPid()
	if pid == 0 {
		c.t.Fatalf("instance %s runs no etcd", id)
	}
	root, err := cgroup2Root()
	if err != nil {
		c.t.Fatal(err)
	}
	ipt, err := iptables.New()
	if err != nil {
		c.t.Fatalf("iptables: %v", err)
	}
	chain := "EMT-" + strings.ReplaceAll(in.IP, ".", "-")
	if len(chain) > 28 {
		chain = chain[:28]
	}
	origin, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", os.Getpid()))
	if err != nil {
		c.t.Fatal(err)
	}
	name := fmt.Sprintf("kopsnode-emtest-%d-%s", os.Getpid(), strings.ReplaceAll(in.IP, ".", "-"))
	cg := filepath.Join(root, name)
	if err := os.Mkdir(cg, 0o755); err != nil {
		c.t.Fatalf("creating cgroup %s: %v", cg, err)
	}
	healed := false
	heal = func() {
		if healed {
			return
		}
		healed = true
		for _, base := range []string{"INPUT", "OUTPUT"} {
			if err := ipt.DeleteIfExists("filter", base, "-j", chain); err != nil {
				c.t.Errorf("iptables: %v", err)
			}
		}
		if err := ipt.ClearAndDeleteChain("filter", chain); err != nil {
			c.t.Errorf("iptables: %v", err)
		}
		// Move the processes back to the test's own cgroup, then remove ours.
		back := parentCgroup(string(origin))
		if procs, err := os.ReadFile(filepath.Join(cg, "cgroup.procs")); err == nil {
			for _, p := range strings.Fields(string(procs)) {
				_ = os.WriteFile(filepath.Join(root, back, "cgroup.procs"), []byte(p), 0o644)
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := os.Remove(cg)
			if err == nil || os.IsNotExist(err) {
				break
			}
			if time.Now().After(deadline) {
				c.t.Errorf("removing cgroup %s: %v", cg, err)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	c.t.Cleanup(heal)
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		c.t.Fatalf("moving etcd pid %d into %s: %v", pid, cg, err)
	}
	if err := ipt.ClearChain("filter", chain); err != nil {
		c.t.Fatalf("iptables: creating chain %s: %v", chain, err)
	}
	rules := [][]string{
		{"-d", in.IP, "-j", "DROP"},
		{"-s", in.IP, "-j", "DROP"},
		{"-m", "cgroup", "--path", name, "-j", "DROP"},
	}
	for _, r := range rules {
		if err := ipt.Append("filter", chain, r...); err != nil {
			c.t.Fatalf("iptables: %v", err)
		}
	}
	for _, base := range []string{"INPUT", "OUTPUT"} {
		if err := ipt.Insert("filter", base, 1, "-j", chain); err != nil {
			c.t.Fatalf("iptables: %v", err)
		}
	}
	c.t.Logf("partitioned %s (%s, etcd pid %d) with iptables chain %s and cgroup %s", id, in.IP, pid, chain, cg)
	return heal
}

// parentCgroup returns the cgroup v2 path ("0::/x/y") of the test process.
func parentCgroup(procCgroup string) string {
	for _, l := range strings.Split(procCgroup, "\n") {
		if strings.HasPrefix(l, "0::") {
			return strings.TrimPrefix(l, "0::")
		}
	}
	return "/"
}
