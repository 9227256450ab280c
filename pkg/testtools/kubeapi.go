package testtools

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// KubeAPIEtcdVersion is the etcd version StartKubeAPIServer stores in.
const KubeAPIEtcdVersion = "3.6.16"

// KubeAPIOptions configures a test API server.
type KubeAPIOptions struct {
	// ServiceCIDR is --service-cluster-ip-range (default 100.64.0.0/13,
	// the configuration's default).
	ServiceCIDR string
	// ExtraArgs are added to kube-apiserver's command line (later flags
	// win).
	ExtraArgs []string
	// ReadyTimeout bounds the wait for /readyz (default 3 minutes: the
	// first start on a busy 2-core machine is slow).
	ReadyTimeout time.Duration
}

// KubeAPIServer is a real kube-apiserver (KubernetesVersion) on 127.0.0.1
// with a real etcd behind it, a throwaway CA and an admin client
// certificate (CN kubernetes-admin, group system:masters). Authorization is
// Node,RBAC and bootstrap-token authentication is on, as on a control-plane
// node. Everything is stopped, by process id, in t.Cleanup.
type KubeAPIServer struct {
	// URL is "https://127.0.0.1:PORT".
	URL string
	// CAPEM is the CA certificate that signed the serving and client
	// certificates.
	CAPEM []byte
	// AdminKubeconfig is the path of a kubeconfig for the admin.
	AdminKubeconfig string
	// Admin is the admin's client configuration.
	Admin *rest.Config

	dir, logPath string
	args         []string
	bin          string
	readyTimeout time.Duration

	ca    *x509.Certificate
	caKey crypto.Signer

	etcd *process

	mu  sync.Mutex // guards api
	api *process
}

// process is a started command and a channel closed when it has exited.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startProcess(bin string, args []string, logPath string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM, then SIGKILL after 10 seconds, and waits for the exit.
func (p *process) stop() {
	if p == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		killAndWait(p.cmd, p.done)
	}
}

// StartKubeAPIServer starts etcd and kube-apiserver and waits until the API
// server is ready.
func StartKubeAPIServer(t testing.TB, opts KubeAPIOptions) *KubeAPIServer {
	t.Helper()
	k := PrepareKubeAPIServer(t, opts)
	k.Start(t)
	return k
}

// PrepareKubeAPIServer starts etcd and writes the certificates, keys and
// the admin kubeconfig, but not kube-apiserver: URL already names the
// address it will listen on, so a test can start a client against an API
// server that is not there yet, then call Start.
func PrepareKubeAPIServer(t testing.TB, opts KubeAPIOptions) *KubeAPIServer {
	t.Helper()
	bin := KubernetesBin(t, "kube-apiserver")
	etcdBin := filepath.Join(EtcdBinDir(t, KubeAPIEtcdVersion), "etcd")
	if opts.ServiceCIDR == "" {
		opts.ServiceCIDR = "100.64.0.0/13"
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 3 * time.Minute
	}
	dir := t.TempDir()
	k := &KubeAPIServer{dir: dir, logPath: filepath.Join(dir, "kube-apiserver.log"), bin: bin, readyTimeout: opts.ReadyTimeout}

	// etcd, plain HTTP on loopback: these tests are about the API server.
	clientAddr, peerAddr := freeAddr(t), freeAddr(t)
	etcd, err := startProcess(etcdBin, []string{
		"--name=default", "--data-dir=" + filepath.Join(dir, "etcd"),
		"--listen-client-urls=http://" + clientAddr, "--advertise-client-urls=http://" + clientAddr,
		"--listen-peer-urls=http://" + peerAddr, "--initial-advertise-peer-urls=http://" + peerAddr,
		"--initial-cluster=default=http://" + peerAddr, "--log-level=warn",
	}, filepath.Join(dir, "etcd.log"))
	if err != nil {
		t.Fatalf("etcd: %v", err)
	}
	k.etcd = etcd
	t.Cleanup(k.stopAll)
	if err := waitReady("http://"+clientAddr+"/health", 60*time.Second, etcd.done); err != nil {
		t.Fatalf("etcd on %s: %v\n--- etcd log ---\n%s", clientAddr, err, tail(readFile(filepath.Join(dir, "etcd.log")), 4000))
	}

	k.ca, k.caKey = newTestCA(t, "kopsnode-test-kubernetes-ca")
	k.CAPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.ca.Raw})
	pki := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(pki, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile := write("ca.crt", k.CAPEM)
	servingCert, servingKey := k.IssueCert(t, "kube-apiserver", nil, true, []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	saDER, err := x509.MarshalPKCS8PrivateKey(saKey)
	if err != nil {
		t.Fatal(err)
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	k.URL = "https://" + addr
	k.args = append([]string{
		"--etcd-servers=http://" + clientAddr,
		"--bind-address=127.0.0.1", "--secure-port=" + port, "--advertise-address=127.0.0.1",
		"--endpoint-reconciler-type=none",
		"--service-cluster-ip-range=" + opts.ServiceCIDR,
		"--tls-cert-file=" + write("apiserver.crt", servingCert), "--tls-private-key-file=" + write("apiserver.key", servingKey),
		"--client-ca-file=" + caFile,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + write("sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER})),
		"--service-account-signing-key-file=" + write("sa.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: saDER})),
		"--authorization-mode=Node,RBAC",
		"--enable-bootstrap-token-auth",
		"--profiling=false",
	}, opts.ExtraArgs...)

	adminCert, adminKey := k.IssueCert(t, "kubernetes-admin", []string{"system:masters"}, false, nil, nil)
	k.Admin = &rest.Config{Host: k.URL, TLSClientConfig: rest.TLSClientConfig{CAData: k.CAPEM, CertData: adminCert, KeyData: adminKey}}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: k.URL, CertificateAuthorityData: k.CAPEM}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: adminCert, ClientKeyData: adminKey}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "admin"}
	kc.CurrentContext = "test"
	k.AdminKubeconfig = filepath.Join(dir, "admin.conf")
	if err := clientcmd.WriteToFile(*kc, k.AdminKubeconfig); err != nil {
		t.Fatalf("writing admin kubeconfig: %v", err)
	}
	return k
}

// Start starts kube-apiserver (again, after Stop) and waits for /readyz.
func (k *KubeAPIServer) Start(t testing.TB) {
	t.Helper()
	k.mu.Lock()
	if k.api != nil {
		k.mu.Unlock()
		t.Fatalf("kube-apiserver already started")
	}
	p, err := startProcess(k.bin, k.args, k.logPath)
	if err != nil {
		k.mu.Unlock()
		t.Fatalf("kube-apiserver: %v", err)
	}
	k.api = p
	k.mu.Unlock()
	if err := k.waitReady(p.done); err != nil {
		t.Fatalf("kube-apiserver on %s: %v\n--- kube-apiserver log ---\n%s", k.URL, err, tail(k.Log(), 6000))
	}
}

// Stop stops kube-apiserver (etcd keeps running); Start brings it back.
func (k *KubeAPIServer) Stop() {
	k.mu.Lock()
	p := k.api
	k.api = nil
	k.mu.Unlock()
	p.stop()
}

func (k *KubeAPIServer) stopAll() {
	k.Stop()
	k.etcd.stop()
}

// Log returns kube-apiserver's log so far.
func (k *KubeAPIServer) Log() string { return readFile(k.logPath) }

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func (k *KubeAPIServer) waitReady(exited <-chan struct{}) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(k.CAPEM)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), k.readyTimeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, k.URL+"/readyz", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /readyz: %s", resp.Status)
		}
		last = err
		select {
		case <-exited:
			return errors.New("kube-apiserver exited")
		case <-ctx.Done():
			return fmt.Errorf("not ready within %s (last: %v)", k.readyTimeout, last)
		case <-tick.C:
		}
	}
}

// IssueCert issues a certificate from the test CA: a client certificate
// (CN, groups as O) or, with serving, a server certificate for the names
// and addresses. It returns the PEM certificate and key.
func (k *KubeAPIServer) IssueCert(t testing.TB, cn string, groups []string, serving bool, dns []string, ips []net.IP) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	usage := x509.ExtKeyUsageClientAuth
	if serving {
		usage = x509.ExtKeyUsageServerAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: cn, Organization: groups},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, k.ca, &key.PublicKey, k.caKey)
	if err != nil {
		t.Fatalf("issuing %s: %v", cn, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func newTestCA(t testing.TB, cn string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
