package manager_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kopsnode/agents/etcd-manager/harness"
	"github.com/kopsnode/agents/etcd-manager/manager"
	"github.com/kopsnode/agents/pkg/pki"
	"github.com/kopsnode/agents/pkg/store/file"
	"github.com/kopsnode/agents/pkg/testtools"
)

const apiserverExpiryMetric = "etcd_manager_apiserver_client_cert_expiry_timestamp_seconds"

// apiserverTLS builds the TLS config the API server would, from the three
// files in dir: --etcd-certfile, --etcd-keyfile, --etcd-cafile. The files
// may be rewritten meanwhile (rotation), so a torn read is retried.
func apiserverTLS(t *testing.T, dir string) (*tls.Config, *x509.Certificate) {
	t.Helper()
	var lastErr error
	for range 20 {
		cert, err := tls.LoadX509KeyPair(filepath.Join(dir, manager.APIServerClientCertFile), filepath.Join(dir, manager.APIServerClientKeyFile))
		if err != nil {
			lastErr = err
			time.Sleep(50 * time.Millisecond)
			continue
		}
		caPEM, err := os.ReadFile(filepath.Join(dir, manager.APIServerCAFile))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			t.Fatalf("%s holds no certificate", filepath.Join(dir, manager.APIServerCAFile))
		}
		return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: []tls.Certificate{cert}}, cert.Leaf
	}
	t.Fatalf("loading the API server's files from %s: %v", dir, lastErr)
	return nil, nil
}

func newEtcdClient(t *testing.T, tlsCfg *tls.Config, endpoints []string) *clientv3.Client {
	t.Helper()
	cl, err := clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: tlsCfg, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

func clientURLs(c *harness.Cluster, ids ...string) []string {
	var eps []string
	for _, id := range ids {
		eps = append(eps, fmt.Sprintf("https://%s:%d", c.Instance(id).IP, harness.ClientPort))
	}
	return eps
}

// putGet writes key=value and reads it back (linearizable) through cl.
func putGet(c *harness.Cluster, cl *clientv3.Client, key, value string) {
	c.Eventually(converge, "put and get "+key, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if _, err := cl.Put(ctx, key, value); err != nil {
			return err
		}
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

func certFileSerial(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("no PEM in %s", p)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return c.SerialNumber.Text(16)
}

func expectKeyMode(t *testing.T, dir string) {
	t.Helper()
	p := filepath.Join(dir, manager.APIServerClientKeyFile)
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %o, want 600", p, st.Mode().Perm())
	}
}

// expectOnlyFiles fails when dir holds anything but the three files (a
// temp file left behind, for example).
func expectOnlyFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Fatalf("%s holds %v, want %v", dir, got, names)
	}
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// TestAPIServerClientCert: with an API server certificate directory the
// instance writes etcd-client.crt, etcd-client.key (0600) and etcd-ca.crt;
// a real etcd client configured from those files alone, as kube-apiserver
// is, writes and reads through etcd's client port; a client certificate
// from another CA is refused by etcd; status and the expiry metric show the
// certificate.
func TestAPIServerClientCert(t *testing.T) {
	t.Parallel()
	apiDir := filepath.Join(t.TempDir(), "kube-apiserver", "etcd-main")
	reg := prometheus.NewRegistry()
	c := harness.New(t, harness.Options{IPPrefix: "127.44.21", Versions: []string{version}, Mutate: func(cfg *manager.Config) {
		cfg.APIServerClientCertDir = apiDir
		cfg.MetricsRegistry = reg
	}})
	c.SetSpec(1, version)
	in := c.Start(1)
	c.WaitMembers(converge, "m1")

	expectOnlyFiles(t, apiDir, manager.APIServerCAFile, manager.APIServerClientCertFile, manager.APIServerClientKeyFile)
	expectKeyMode(t, apiDir)
	tlsCfg, leaf := apiserverTLS(t, apiDir)
	if leaf.Subject.CommonName != manager.APIServerClientCN {
		t.Errorf("CN %q, want %q", leaf.Subject.CommonName, manager.APIServerClientCN)
	}
	if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || leaf.IsCA {
		t.Errorf("usages %v (CA %v), want client auth only", leaf.ExtKeyUsage, leaf.IsCA)
	}
	// etcd-ca.crt is the CA of etcd's serving certificate.
	srv, err := os.ReadFile(filepath.Join(in.DataDir, "pki", "etcd-server.crt"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(srv)
	srvCert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srvCert.Verify(x509.VerifyOptions{Roots: tlsCfg.RootCAs, DNSName: in.IP}); err != nil {
		t.Fatalf("etcd's serving certificate does not verify against etcd-ca.crt: %v", err)
	}

	cl := newEtcdClient(t, tlsCfg, clientURLs(c, "m1"))
	putGet(c, cl, "/registry/apiserver", "written with the API server's files")
	c.ExpectKey(converge, "/registry/apiserver", "written with the API server's files", "m1")

	// The same through etcd's HTTP /health on the client port, and the
	// same request with a certificate from another etcd-clients-ca.
	healthURL := clientURLs(c, "m1")[0] + "/health"
	if code, err := httpGet(tlsCfg, healthURL); err != nil || code != http.StatusOK {
		t.Fatalf("GET %s with the API server's certificate: %d %v", healthURL, code, err)
	}
	foreign := foreignClientTLS(t, tlsCfg.RootCAs)
	if code, err := httpGet(foreign, healthURL); err == nil || !strings.Contains(err.Error(), "tls:") {
		t.Fatalf("GET %s with a certificate from another CA: %d %v; want a TLS error", healthURL, code, err)
	}
	fcl := newEtcdClient(t, foreign, clientURLs(c, "m1"))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	_, err = fcl.Put(ctx, "/registry/intruder", "x")
	cancel()
	if err == nil {
		t.Fatal("etcd accepted a write from a client certificate of another CA")
	}
	resp, err := cl.Get(context.Background(), "/registry/intruder")
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("intruder key: %v %v", resp, err)
	}

	// Status (as served on /status and printed by `etcd-manager status`).
	st, err := in.M.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	a := st.APIServerClientCert
	if a == nil || a.Dir != apiDir || a.Serial != leaf.SerialNumber.Text(16) || !a.NotAfter.Equal(leaf.NotAfter) || a.CommonName != manager.APIServerClientCN || a.Error != "" || a.Written.IsZero() {
		t.Fatalf("status apiserverClientCert = %+v; want dir %s serial %s", a, apiDir, leaf.SerialNumber.Text(16))
	}
	js, _ := json.Marshal(st)
	if !strings.Contains(string(js), `"apiserverClientCert":{"dir":"`+apiDir) {
		t.Fatalf("status JSON lacks apiserverClientCert: %s", js)
	}
	if v, ok := gaugeValue(t, reg, apiserverExpiryMetric); !ok || int64(v) != leaf.NotAfter.Unix() {
		t.Fatalf("%s = %v (%v), want %d", apiserverExpiryMetric, v, ok, leaf.NotAfter.Unix())
	}

	// A restart keeps the valid certificate (no churn), and a removed
	// file is written again.
	serial := leaf.SerialNumber.Text(16)
	c.Stop("m1")
	in = c.Start(1)
	c.WaitMembers(converge, "m1")
	if got := certFileSerial(t, filepath.Join(apiDir, manager.APIServerClientCertFile)); got != serial {
		t.Fatalf("restart replaced a valid certificate: serial %s, was %s", got, serial)
	}
	if err := os.Remove(filepath.Join(apiDir, manager.APIServerClientKeyFile)); err != nil {
		t.Fatal(err)
	}
	c.Eventually(converge, "removed key file written again", func() error {
		_, err := os.Stat(filepath.Join(apiDir, manager.APIServerClientKeyFile))
		return err
	})
	tlsCfg, _ = apiserverTLS(t, apiDir)
	putGet(c, newEtcdClient(t, tlsCfg, clientURLs(c, "m1")), "/registry/again", "v")
	expectKeyMode(t, apiDir)
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func httpGet(tlsCfg *tls.Config, u string) (int, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(u)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// foreignClientTLS is a client certificate with the right name from an
// etcd-clients-ca of another cluster (another store).
func foreignClientTLS(t *testing.T, roots *x509.CertPool) *tls.Config {
	t.Helper()
	other, err := file.New(t.TempDir(), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ks, err := pki.NewKeystore(other, "test.k8s.local/pki", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ks.EnsureCA(context.Background(), pki.CAEtcdClients, pki.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.Issue(pki.CertRequest{CommonName: manager.APIServerClientCN, Usage: pki.UsageClient})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := kp.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, Certificates: []tls.Certificate{cert}}
}

// TestAPIServerClientCertRotation: certificates live an hour and are
// renewed when less than 1h-8s is left (as in TestCertificateRotation), so
// every instance rewrites the API server's files about every 8 seconds.
// Each instance's files get a new serial, the cluster keeps serving
// throughout, and a client built from the new files works; the key stays
// mode 0600 and no temp file is left.
func TestAPIServerClientCertRotation(t *testing.T) {
	t.Parallel()
	apiRoot := t.TempDir()
	var mu sync.Mutex
	regs := map[string]*prometheus.Registry{}
	c := harness.New(t, harness.Options{IPPrefix: "127.44.22", Versions: []string{version}, Mutate: func(cfg *manager.Config) {
		cfg.CertValidity = time.Hour
		cfg.RenewBefore = time.Hour - 8*time.Second
		cfg.APIServerClientCertDir = filepath.Join(apiRoot, cfg.ID)
		reg := prometheus.NewRegistry()
		mu.Lock()
		regs[cfg.ID] = reg
		mu.Unlock()
		cfg.MetricsRegistry = reg
	}})
	c.SetSpec(3, version)
	ids := startN(c, 3)
	c.WaitMembers(converge, ids...)
	serials := map[string]string{}
	for _, id := range ids {
		serials[id] = certFileSerial(t, filepath.Join(apiRoot, id, manager.APIServerClientCertFile))
	}
	oldTLS, _ := apiserverTLS(t, filepath.Join(apiRoot, "m1"))
	oldClient := newEtcdClient(t, oldTLS, clientURLs(c, ids...))
	putGet(c, oldClient, "/before", "rotation")

	cl := c.Client(ids...)
	deadline := time.Now().Add(converge)
	for {
		rotated := 0
		for _, id := range ids {
			if certFileSerial(t, filepath.Join(apiRoot, id, manager.APIServerClientCertFile)) != serials[id] {
				rotated++
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := cl.Put(ctx, "/during", "rotation")
		cancel()
		if err != nil {
			t.Fatalf("write failed during rotation: %v", err)
		}
		if rotated == len(ids) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d instances rotated the API server's certificate", rotated, len(ids))
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, id := range ids {
		dir := filepath.Join(apiRoot, id)
		expectKeyMode(t, dir)
		expectOnlyFiles(t, dir, manager.APIServerCAFile, manager.APIServerClientCertFile, manager.APIServerClientKeyFile)
		tlsCfg, leaf := apiserverTLS(t, dir)
		if leaf.SerialNumber.Text(16) == serials[id] {
			t.Fatalf("%s: files still hold serial %s", id, serials[id])
		}
		putGet(c, newEtcdClient(t, tlsCfg, clientURLs(c, ids...)), "/after/"+id, "rotation")
		// Status and metric follow the files (they may have rotated
		// again in between: compare with the instance's own view).
		st, _ := c.Instance(id).M.Status(context.Background())
		if a := st.APIServerClientCert; a == nil || a.Serial == serials[id] || a.Error != "" {
			t.Fatalf("%s: status %+v", id, a)
		} else {
			mu.Lock()
			reg := regs[id]
			mu.Unlock()
			c.Eventually(10*time.Second, id+" expiry metric", func() error {
				st, _ := c.Instance(id).M.Status(context.Background())
				v, ok := gaugeValue(t, reg, apiserverExpiryMetric)
				if !ok || int64(v) != st.APIServerClientCert.NotAfter.Unix() {
					return fmt.Errorf("%s = %v (%v), status notAfter %s", apiserverExpiryMetric, v, ok, st.APIServerClientCert.NotAfter)
				}
				return nil
			})
		}
	}
	c.ExpectKey(converge, "/before", "rotation", ids...)
	c.ExpectKey(converge, "/during", "rotation", ids...)
}

// TestAPIServerClientCertDirUnwritable: the directory is a read-only bind
// mount holding an old key file. etcd still runs and serves; status names
// the directory and file; the old key is untouched and no temp file or
// partial key appears. Once the directory is writable (unmounted), the
// files are written on a later tick and work.
func TestAPIServerClientCertDirUnwritable(t *testing.T) {
	t.Parallel()
	testtools.RequireRoot(t)
	src, dst := t.TempDir(), t.TempDir()
	oldKey := filepath.Join(src, manager.APIServerClientKeyFile)
	if err := os.WriteFile(oldKey, []byte("old key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount(src, dst, "", syscall.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount %s on %s: %v", src, dst, err)
	}
	mounted := true
	unmount := func() {
		if mounted {
			if err := syscall.Unmount(dst, 0); err != nil {
				t.Errorf("unmounting %s: %v", dst, err)
				return
			}
			mounted = false
		}
	}
	t.Cleanup(unmount)
	if err := syscall.Mount("", dst, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		t.Fatalf("remounting %s read-only: %v", dst, err)
	}

	logs := &lockedBuffer{}
	c := harness.New(t, harness.Options{IPPrefix: "127.44.23", Versions: []string{version}, Mutate: func(cfg *manager.Config) {
		cfg.APIServerClientCertDir = dst
		cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	}})
	c.SetSpec(1, version)
	in := c.Start(1)
	c.WaitMembers(converge, "m1")
	c.Put("/k", "v")
	st, _ := in.M.Status(context.Background())
	// A few more ticks fail the same way: the error is logged once.
	c.Eventually(converge, "three more reconciles", func() error {
		if now, _ := in.M.Status(context.Background()); !now.LastReconcile.After(st.LastReconcile.Add(3 * 500 * time.Millisecond)) {
			return fmt.Errorf("last reconcile %s", now.LastReconcile)
		}
		return nil
	})
	if n := strings.Count(logs.String(), `level=ERROR msg="API server client certificate"`); n != 1 {
		t.Fatalf("the error was logged %d times, want once:\n%s", n, logs.String())
	}
	st, _ = in.M.Status(context.Background())
	a := st.APIServerClientCert
	if a == nil || !strings.Contains(a.Error, filepath.Join(dst, "etcd-")) || !strings.Contains(a.Error, "read-only file system") || a.Serial != "" {
		t.Fatalf("status apiserverClientCert = %+v; want an error naming %s", a, dst)
	}
	if b, err := os.ReadFile(oldKey); err != nil || string(b) != "old key\n" {
		t.Fatalf("old key file changed: %q %v", b, err)
	}
	expectOnlyFiles(t, src, manager.APIServerClientKeyFile)

	unmount()
	c.Eventually(converge, "files written once the directory is writable", func() error {
		st, _ := in.M.Status(context.Background())
		if a := st.APIServerClientCert; a == nil || a.Error != "" || a.Serial == "" {
			return fmt.Errorf("status %+v", a)
		}
		return nil
	})
	expectKeyMode(t, dst)
	tlsCfg, _ := apiserverTLS(t, dst)
	putGet(c, newEtcdClient(t, tlsCfg, clientURLs(c, "m1")), "/registry/after-error", "v")
	c.ExpectKey(converge, "/k", "v", "m1")
}

// TestAPIServerClientCertDirRelativeRefused: a relative directory is a
// config error naming the field.
func TestAPIServerClientCertDirRelativeRefused(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "127.44.24")
	cfg := c.Config("m1", c.IP(1))
	cfg.APIServerClientCertDir = "pki/etcd-main"
	m, err := manager.Start(context.Background(), cfg)
	if err == nil {
		_ = m.Close()
		t.Fatal("started with a relative API server certificate directory")
	}
	if !strings.Contains(err.Error(), `apiServerClientCertDir: "pki/etcd-main" is not an absolute path`) {
		t.Fatalf("error %v", err)
	}
}
