// Package harness runs several etcd-manager instances in one test process,
// each on its own loopback address (all of 127.0.0.0/8 is local on Linux)
// with its own data directory and a real etcd child process, against a
// shared state store, with short timings. Every instance and etcd process
// is stopped in t.Cleanup.
package harness

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/discovery"
	"github.com/kopsnode/agents/etcd-manager/manager"
	"github.com/kopsnode/agents/pkg/pki"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/file"
	"github.com/kopsnode/agents/pkg/testtools"
)

// Ports used by every instance (each on its own address).
const (
	PeerPort    = 12380
	ClientPort  = 14001
	ManagerPort = 13994
)

// Options configures a test cluster.
type Options struct {
	// IPPrefix is the first three octets of the instances' loopback
	// addresses, such as "127.44.1"; each test uses its own.
	IPPrefix string
	// Store is the state store; nil means a file store in a temp dir.
	Store store.Store
	// Cluster and EtcdCluster name the cluster; defaults "test.k8s.local", "main".
	Cluster, EtcdCluster string
	// Versions are the etcd versions to install (from the test tools).
	Versions []string
	// Tick and LeaseDuration; defaults 500ms and 2s.
	Tick, LeaseDuration time.Duration
	// DeadMemberThreshold defaults to 3s.
	DeadMemberThreshold time.Duration
	// Mutate, when set, adjusts each instance's config before start.
	Mutate func(*manager.Config)
}

// Cluster is a set of instances sharing a store.
type Cluster struct {
	t       testing.TB
	opts    Options
	Store   store.Store
	Layout  control.Layout
	BinRoot string
	baseDir string
	logPath string
	logFile *os.File
	logger  *slog.Logger

	mu         sync.Mutex // guards instances, clientCert, clientPool
	instances  map[string]*Instance
	clientCert tls.Certificate
	clientPool *x509.CertPool
}

// Instance is one etcd-manager "machine".
type Instance struct {
	ID, IP, DataDir string
	M               *manager.Manager
}

// New prepares a cluster; no instance runs yet.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Cluster == "" {
		opts.Cluster = "test.k8s.local"
	}
	if opts.EtcdCluster == "" {
		opts.EtcdCluster = "main"
	}
	if opts.Tick == 0 {
		opts.Tick = 500 * time.Millisecond
	}
	if opts.LeaseDuration == 0 {
		opts.LeaseDuration = 2 * time.Second
	}
	if opts.DeadMemberThreshold == 0 {
		opts.DeadMemberThreshold = 3 * time.Second
	}
	if len(opts.Versions) == 0 {
		opts.Versions = []string{"3.6.16"}
	}
	base := t.TempDir()
	binRoot := filepath.Join(base, "etcd-bin")
	for _, v := range opts.Versions {
		dir := filepath.Join(binRoot, "v"+v)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		// etcd and etcdutl (restores), as nodeup installs them.
		if err := os.Symlink(filepath.Join(testtools.EtcdBinDir(t, v), "etcd"), filepath.Join(dir, "etcd")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(testtools.EtcdutlBin(t, v), filepath.Join(dir, "etcdutl")); err != nil {
			t.Fatal(err)
		}
	}
	st := opts.Store
	if st == nil {
		fs, err := file.New(filepath.Join(base, "store"), file.Options{CreateRoot: true})
		if err != nil {
			t.Fatal(err)
		}
		st = fs
	}
	logPath := filepath.Join(base, "managers.log")
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{
		t: t, opts: opts, Store: st, BinRoot: binRoot, baseDir: base, logPath: logPath, logFile: lf,
		logger:    slog.New(slog.NewTextHandler(&syncWriter{f: lf}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Layout:    control.Layout{Cluster: opts.Cluster, EtcdCluster: opts.EtcdCluster},
		instances: map[string]*Instance{},
	}
	t.Cleanup(func() {
		c.StopAll()
		if t.Failed() {
			c.dumpLog(150)
		}
		_ = lf.Close()
	})
	return c
}

type syncWriter struct {
	mu sync.Mutex
	f  *os.File
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.f.Write(p)
}

func (c *Cluster) dumpLog(n int) {
	f, err := os.Open(c.logPath)
	if err != nil {
		return
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.Contains(l, "level=DEBUG") || (strings.Contains(l, "level=WARN") && strings.Contains(l, `msg="etcd output"`)) {
			continue
		}
		lines = append(lines, l)
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	c.t.Logf("last %d lines of the managers' log %s:\n%s", len(lines), c.logPath, strings.Join(lines, "\n"))
}

// IP returns the address of instance number n (1-based): <prefix>.<n+1>.
func (c *Cluster) IP(n int) string { return fmt.Sprintf("%s.%d", c.opts.IPPrefix, n+1) }

// SetSpec writes the desired spec.
func (c *Cluster) SetSpec(members int, version string) {
	c.t.Helper()
	if err := control.WriteSpec(context.Background(), c.Store, c.Layout, control.Spec{MemberCount: members, EtcdVersion: version}); err != nil {
		c.t.Fatal(err)
	}
}

// Config returns the config instance id at ip would start with.
func (c *Cluster) Config(id, ip string) manager.Config {
	cfg := manager.DefaultConfig(c.opts.Cluster, c.opts.EtcdCluster)
	cfg.ID = id
	cfg.DataDir = filepath.Join(c.baseDir, "data", id)
	cfg.BinDirRoot = c.BinRoot
	cfg.Address = ip
	cfg.PeerPort, cfg.ClientPort, cfg.ManagerPort = PeerPort, ClientPort, ManagerPort
	cfg.Store = c.Store
	cfg.Discovery = discovery.NewStoreRegistry(c.Store, c.Layout.PeersPrefix(), 4*c.opts.LeaseDuration, nil)
	cfg.Tick = c.opts.Tick
	cfg.LeaseDuration = c.opts.LeaseDuration
	cfg.PeerTimeout = time.Second
	cfg.DeadMemberThreshold = c.opts.DeadMemberThreshold
	cfg.EtcdLogLevel = "warn"
	cfg.ExtraSANs = []string{"127.0.0.1"}
	// Every instance shares the client port on its own address; a test
	// that wants etcd on 127.0.0.1 too sets it for one instance (Mutate).
	cfg.LocalClientAddress = ""
	cfg.Logger = c.logger
	if c.opts.Mutate != nil {
		c.opts.Mutate(&cfg)
	}
	return cfg
}

// Start starts instance number n (1-based) with ID "m<n>".
func (c *Cluster) Start(n int) *Instance {
	c.t.Helper()
	return c.StartWith(c.Config(fmt.Sprintf("m%d", n), c.IP(n)))
}

// StartWith starts an instance with cfg.
func (c *Cluster) StartWith(cfg manager.Config) *Instance {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := manager.Start(ctx, cfg)
	if err != nil {
		c.t.Fatalf("starting instance %s on %s: %v", cfg.ID, cfg.Address, err)
	}
	in := &Instance{ID: m.ID(), IP: cfg.Address, DataDir: cfg.DataDir, M: m}
	c.mu.Lock()
	c.instances[in.ID] = in
	c.mu.Unlock()
	return in
}

// Instance returns a running instance.
func (c *Cluster) Instance(id string) *Instance {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.instances[id]
}

// Stop closes an instance cleanly (its etcd stops too).
func (c *Cluster) Stop(id string) {
	c.t.Helper()
	c.mu.Lock()
	in := c.instances[id]
	delete(c.instances, id)
	c.mu.Unlock()
	if in != nil {
		if err := in.M.Close(); err != nil {
			c.t.Logf("closing %s: %v", id, err)
		}
	}
}

// Kill kills an instance's "machine": etcd gets SIGKILL, the manager stops
// without releasing anything.
func (c *Cluster) Kill(id string) {
	c.mu.Lock()
	in := c.instances[id]
	delete(c.instances, id)
	c.mu.Unlock()
	if in != nil {
		in.M.Kill()
	}
}

// Wipe removes an instance's data directory (its disk is replaced).
func (c *Cluster) Wipe(id string) {
	c.t.Helper()
	if err := os.RemoveAll(filepath.Join(c.baseDir, "data", id)); err != nil {
		c.t.Fatal(err)
	}
}

// StopAll closes every instance, in parallel.
func (c *Cluster) StopAll() {
	c.mu.Lock()
	ins := c.instances
	c.instances = map[string]*Instance{}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, in := range ins {
		wg.Add(1)
		go func(in *Instance) {
			defer wg.Done()
			_ = in.M.Close()
		}(in)
	}
	wg.Wait()
}

// Running returns the running instances' IDs, sorted.
func (c *Cluster) Running() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []string
	for id := range c.instances {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Leaders returns the running instances that believe they lead.
func (c *Cluster) Leaders() []string {
	var out []string
	for _, id := range c.Running() {
		if in := c.Instance(id); in != nil && in.M.IsLeader() {
			out = append(out, id)
		}
	}
	return out
}

// Eventually polls cond until it returns nil or the timeout passes, then
// fails the test with the last error.
func (c *Cluster) Eventually(timeout time.Duration, what string, cond func() error) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: not true after %s: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// WaitLeader waits until exactly one running instance leads and returns it.
func (c *Cluster) WaitLeader(timeout time.Duration) string {
	c.t.Helper()
	var leader string
	c.Eventually(timeout, "one leader", func() error {
		ls := c.Leaders()
		if len(ls) != 1 {
			return fmt.Errorf("leaders: %v", ls)
		}
		leader = ls[0]
		return nil
	})
	return leader
}

// Client returns an etcd client with a client certificate from the
// cluster's etcd-clients-ca, talking to the given instances' client URLs.
func (c *Cluster) Client(ids ...string) *clientv3.Client {
	c.t.Helper()
	c.mu.Lock()
	cert, pool := c.clientCert, c.clientPool
	c.mu.Unlock()
	if pool == nil {
		ks, err := pki.NewKeystore(c.Store, c.Layout.PKIPrefix(), nil, nil)
		if err != nil {
			c.t.Fatal(err)
		}
		ca, err := ks.LoadCA(context.Background(), pki.CAEtcdClients)
		if err != nil {
			c.t.Fatal(err)
		}
		kp, err := ca.Issue(pki.CertRequest{CommonName: "test-client", Usage: pki.UsageClient})
		if err != nil {
			c.t.Fatal(err)
		}
		if cert, err = kp.TLSCertificate(); err != nil {
			c.t.Fatal(err)
		}
		pool = ca.CertPool()
		c.mu.Lock()
		c.clientCert, c.clientPool = cert, pool
		c.mu.Unlock()
	}
	var eps []string
	for _, id := range ids {
		ip := ""
		if in := c.Instance(id); in != nil {
			ip = in.IP
		} else {
			c.t.Fatalf("no running instance %s", id)
		}
		eps = append(eps, fmt.Sprintf("https://%s:%d", ip, ClientPort))
	}
	cl, err := clientv3.New(clientv3.Config{
		Endpoints:   eps,
		TLS:         &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		DialTimeout: 3 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// WaitMembers waits until the cluster, asked through the running instances,
// has exactly the named voting members, all started and none a learner, and
// each answers a linearizable read.
func (c *Cluster) WaitMembers(timeout time.Duration, ids ...string) {
	c.t.Helper()
	want := append([]string(nil), ids...)
	sort.Strings(want)
	cl := c.Client(c.Running()...)
	c.Eventually(timeout, fmt.Sprintf("etcd members %v", want), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := cl.MemberList(ctx)
		if err != nil {
			return err
		}
		var got []string
		for _, m := range resp.Members {
			if m.IsLearner {
				return fmt.Errorf("member %q (%x) is still a learner", m.Name, m.ID)
			}
			if m.Name == "" {
				return fmt.Errorf("member %x not started", m.ID)
			}
			got = append(got, m.Name)
		}
		sort.Strings(got)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			return fmt.Errorf("members %v", got)
		}
		for _, id := range want {
			in := c.Instance(id)
			if in == nil {
				return fmt.Errorf("member %s has no running instance", id)
			}
			ep := fmt.Sprintf("https://%s:%d", in.IP, ClientPort)
			st, err := cl.Status(ctx, ep)
			if err != nil {
				return fmt.Errorf("status of %s: %w", ep, err)
			}
			if st.IsLearner {
				return fmt.Errorf("%s is a learner", ep)
			}
		}
		return nil
	})
}

// Put writes a key through the running instances.
func (c *Cluster) Put(key, value string) {
	c.t.Helper()
	cl := c.Client(c.Running()...)
	c.Eventually(20*time.Second, "put "+key, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err := cl.Put(ctx, key, value)
		return err
	})
}

// ExpectKey checks that every given instance serves key with value on a
// linearizable read through its own endpoint.
func (c *Cluster) ExpectKey(timeout time.Duration, key, value string, ids ...string) {
	c.t.Helper()
	for _, id := range ids {
		cl := c.Client(id)
		c.Eventually(timeout, fmt.Sprintf("%s=%s on %s", key, value, id), func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			resp, err := cl.Get(ctx, key)
			if err != nil {
				return err
			}
			if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != value {
				return fmt.Errorf("got %v", resp.Kvs)
			}
			return nil
		})
	}
}

// Created returns the created marker.
func (c *Cluster) Created() (control.Created, bool) {
	c.t.Helper()
	cr, ok, err := control.ReadCreated(context.Background(), c.Store, c.Layout)
	if err != nil {
		c.t.Fatal(err)
	}
	return cr, ok
}
