package manager

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/kopsnode/agents/etcd-manager/etcdprocess"
	"github.com/kopsnode/agents/pkg/pki"
)

// certs holds the CAs of this etcd cluster and the certificates issued to
// this instance: its manager peer-protocol certificate (in memory) and the
// etcd peer, etcd server and etcd client certificates (files under
// <data-dir>/pki, which etcd reads).
type certs struct {
	dir      string
	validity time.Duration

	mu sync.Mutex // guards the fields below
	// The CAs are nil while the store could not be read at start (the
	// instance then runs on the certificates it issued before).
	managerCA, peersCA, clientsCA *pki.CA
	managerKP                     *tls.Certificate
	managerExp                    time.Time
	etcdExp                       time.Time
}

// setCAs installs the CAs once they could be loaded.
func (c *certs) setCAs(mgr, peers, clients *pki.CA) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.managerCA, c.peersCA, c.clientsCA = mgr, peers, clients
}

func (c *certs) cas() (mgr, peers, clients *pki.CA, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.managerCA == nil {
		return nil, nil, nil, errors.New("the CAs are not loaded yet (state store unreachable at start)")
	}
	return c.managerCA, c.peersCA, c.clientsCA, nil
}

func (c *certs) managerFiles() etcdprocess.TLSFiles {
	return etcdprocess.TLSFiles{CertFile: filepath.Join(c.dir, "manager.crt"), KeyFile: filepath.Join(c.dir, "manager.key"), CAFile: filepath.Join(c.dir, "etcd-manager-ca.crt")}
}

// loadFromFiles loads the certificates issued by an earlier run, for a start
// while the store is unreachable. Every file must be there.
func (c *certs) loadFromFiles() error {
	f := c.managerFiles()
	for _, p := range []string{f.CertFile, f.KeyFile, f.CAFile, c.peerFiles().CertFile, c.peerFiles().KeyFile, c.peerFiles().CAFile,
		c.serverFiles().CertFile, c.serverFiles().KeyFile, c.clientFiles().CertFile, c.clientFiles().KeyFile, c.clientFiles().CAFile} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("no certificates from an earlier run: %w", err)
		}
	}
	tc, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return fmt.Errorf("loading %s: %w", f.CertFile, err)
	}
	exp := time.Time{}
	if tc.Leaf != nil {
		exp = tc.Leaf.NotAfter
	}
	c.mu.Lock()
	c.managerKP, c.managerExp = &tc, exp
	c.mu.Unlock()
	return nil
}

// managerPool is the pool of the etcd-manager CA, from the store or from
// the file written when the CA was last loaded.
func (c *certs) managerPool() (*x509.CertPool, error) {
	return poolFromFile(c.managerFiles().CAFile)
}

func poolFromFile(p string) (*x509.CertPool, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no certificate", p)
	}
	return pool, nil
}

type certSubject struct {
	id       string
	dnsNames []string
	ips      []net.IP
}

func loadCAs(ctx context.Context, ks *pki.Keystore, etcdCluster string) (mgr, peers, clients *pki.CA, err error) {
	if mgr, err = ks.EnsureCA(ctx, pki.CAEtcdManager(etcdCluster), pki.CAOptions{}); err != nil {
		return nil, nil, nil, fmt.Errorf("etcd-manager CA: %w", err)
	}
	if peers, err = ks.EnsureCA(ctx, pki.CAEtcdPeers(etcdCluster), pki.CAOptions{}); err != nil {
		return nil, nil, nil, fmt.Errorf("etcd peers CA: %w", err)
	}
	if clients, err = ks.EnsureCA(ctx, pki.CAEtcdClients, pki.CAOptions{}); err != nil {
		return nil, nil, nil, fmt.Errorf("etcd clients CA: %w", err)
	}
	return mgr, peers, clients, nil
}

func (c *certs) issueManager(s certSubject) error {
	mgrCA, _, _, err := c.cas()
	if err != nil {
		return err
	}
	kp, err := mgrCA.Issue(pki.CertRequest{
		CommonName: "etcd-manager-" + s.id, Usage: pki.UsagePeer,
		DNSNames: s.dnsNames, IPs: s.ips, Validity: c.validity,
	})
	if err != nil {
		return fmt.Errorf("issuing etcd-manager certificate: %w", err)
	}
	tc, err := kp.TLSCertificate()
	if err != nil {
		return err
	}
	f := c.managerFiles()
	if err := kp.WriteKeypairFiles(f.CertFile, f.KeyFile); err != nil {
		return err
	}
	if err := pki.WriteFileAtomic(f.CAFile, mgrCA.CertPEM(), 0o644); err != nil {
		return err
	}
	c.mu.Lock()
	c.managerKP, c.managerExp = &tc, kp.Cert.NotAfter
	c.mu.Unlock()
	return nil
}

func (c *certs) managerCert() (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.managerKP == nil {
		return nil, fmt.Errorf("no etcd-manager certificate issued yet")
	}
	return c.managerKP, nil
}

// files returns the TLS file sets etcd uses.
func (c *certs) peerFiles() etcdprocess.TLSFiles {
	return etcdprocess.TLSFiles{CertFile: filepath.Join(c.dir, "etcd-peer.crt"), KeyFile: filepath.Join(c.dir, "etcd-peer.key"), CAFile: filepath.Join(c.dir, "etcd-peers-ca.crt")}
}

func (c *certs) serverFiles() etcdprocess.TLSFiles {
	return etcdprocess.TLSFiles{CertFile: filepath.Join(c.dir, "etcd-server.crt"), KeyFile: filepath.Join(c.dir, "etcd-server.key"), CAFile: filepath.Join(c.dir, "etcd-clients-ca.crt")}
}

func (c *certs) clientFiles() etcdprocess.TLSFiles {
	return etcdprocess.TLSFiles{CertFile: filepath.Join(c.dir, "etcd-client.crt"), KeyFile: filepath.Join(c.dir, "etcd-client.key"), CAFile: filepath.Join(c.dir, "etcd-clients-ca.crt")}
}

// issueEtcd (re)issues the etcd peer, server and client certificates and
// writes them with the CA certificates to files, atomically.
func (c *certs) issueEtcd(s certSubject) error {
	_, peersCA, clientsCA, err := c.cas()
	if err != nil {
		return err
	}
	type one struct {
		ca    *pki.CA
		req   pki.CertRequest
		files etcdprocess.TLSFiles
	}
	serverIPs := append(append([]net.IP(nil), s.ips...), net.ParseIP("127.0.0.1"))
	serverNames := append(append([]string(nil), s.dnsNames...), "localhost")
	var exp time.Time
	for _, o := range []one{
		{peersCA, pki.CertRequest{CommonName: "etcd-peer-" + s.id, Usage: pki.UsagePeer, DNSNames: s.dnsNames, IPs: s.ips, Validity: c.validity}, c.peerFiles()},
		{clientsCA, pki.CertRequest{CommonName: "etcd-server-" + s.id, Usage: pki.UsageServer, DNSNames: serverNames, IPs: serverIPs, Validity: c.validity}, c.serverFiles()},
		{clientsCA, pki.CertRequest{CommonName: "etcd-manager", Usage: pki.UsageClient, Validity: c.validity}, c.clientFiles()},
	} {
		kp, err := o.ca.Issue(o.req)
		if err != nil {
			return fmt.Errorf("issuing %s: %w", o.req.CommonName, err)
		}
		if err := kp.WriteKeypairFiles(o.files.CertFile, o.files.KeyFile); err != nil {
			return err
		}
		if err := pki.WriteFileAtomic(o.files.CAFile, o.ca.CertPEM(), 0o644); err != nil {
			return err
		}
		if exp.IsZero() || kp.Cert.NotAfter.Before(exp) {
			exp = kp.Cert.NotAfter
		}
	}
	c.mu.Lock()
	c.etcdExp = exp
	c.mu.Unlock()
	return nil
}

func (c *certs) etcdExpiry() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.etcdExp
}

func (c *certs) managerExpiry() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.managerExp
}

// etcdClientTLS is the TLS config the manager uses as an etcd client.
func (c *certs) etcdClientTLS() (*tls.Config, error) {
	f := c.clientFiles()
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("loading etcd client certificate %s: %w", f.CertFile, err)
	}
	pool, err := poolFromFile(f.CAFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: []tls.Certificate{cert}}, nil
}
