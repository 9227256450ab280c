package manager

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kopsnode/agents/pkg/pki"
)

// The files written into Config.APIServerClientCertDir for kube-apiserver
// (its --etcd-certfile, --etcd-keyfile and --etcd-cafile).
const (
	APIServerClientCertFile = "etcd-client.crt"
	APIServerClientKeyFile  = "etcd-client.key"
	APIServerCAFile         = "etcd-ca.crt"
	// APIServerClientCN is the subject CN of the API server's certificate.
	APIServerClientCN = "kube-apiserver-etcd-client"
)

// APIServerCertStatus is the API server's etcd client certificate as this
// instance keeps it: part of Status.
type APIServerCertStatus struct {
	Dir        string    `json:"dir"`
	CommonName string    `json:"commonName,omitempty"`
	Serial     string    `json:"serial,omitempty"`
	NotBefore  time.Time `json:"notBefore,omitzero"`
	NotAfter   time.Time `json:"notAfter,omitzero"`
	// Written is when this instance last wrote the files (zero when the
	// files of an earlier run are still in use).
	Written time.Time `json:"written,omitzero"`
	// Error is the last failure to check or write the files; empty once
	// they are good.
	Error string `json:"error,omitempty"`
}

// apiserverPaths returns the certificate, key and CA file paths.
func (m *Manager) apiserverPaths() (certPath, keyPath, caPath string) {
	d := m.cfg.APIServerClientCertDir
	return filepath.Join(d, APIServerClientCertFile), filepath.Join(d, APIServerClientKeyFile), filepath.Join(d, APIServerCAFile)
}

// ensureAPIServerCert keeps a valid client certificate for kube-apiserver
// in Config.APIServerClientCertDir: issued by etcd-clients-ca (the CA that
// etcd's client port trusts, which also signs etcd's serving certificates,
// so etcd-ca.crt is that CA), reissued when it is missing, does not verify
// against the CA, or needs rotation by the same threshold as the members'
// certificates (RenewBefore). etcd is not restarted: the API server reads
// the new files itself. A failure is logged, kept in the status, and tried
// again on the next tick; etcd is left alone. Called from Start and from
// the loop goroutine only.
func (m *Manager) ensureAPIServerCert() {
	if m.cfg.APIServerClientCertDir == "" {
		return
	}
	_, _, clientsCA, err := m.certs.cas()
	if err != nil {
		// The store was unreachable at start: show what an earlier run
		// left; issue once the CAs load.
		m.mu.Lock()
		have := m.apiCert != nil
		m.mu.Unlock()
		if !have {
			if cert, err := m.readAPIServerCert(nil); err == nil {
				m.setAPIServerCert(cert, false, false)
			}
		}
		return
	}
	cur, why := m.currentAPIServerCert(clientsCA)
	if cur != nil {
		if !m.apiserverCertNeedsRotation(cur, clientsCA) {
			m.setAPIServerCert(cur, true, false)
			return
		}
		why = fmt.Sprintf("expires at %s, within %s", cur.NotAfter.UTC().Format(time.RFC3339), m.cfg.RenewBefore)
	}
	kp, err := clientsCA.Issue(pki.CertRequest{CommonName: APIServerClientCN, Usage: pki.UsageClient, Validity: m.cfg.CertValidity})
	if err != nil {
		m.setAPIServerErr(fmt.Errorf("issuing the API server's etcd client certificate: %w", err))
		return
	}
	certPath, keyPath, caPath := m.apiserverPaths()
	if err := writeFileSetAtomic([]pendingFile{
		{path: caPath, data: clientsCA.CertPEM(), perm: 0o644},
		{path: keyPath, data: kp.KeyPEM, perm: 0o600},
		{path: certPath, data: kp.CertPEM, perm: 0o644},
	}); err != nil {
		m.setAPIServerErr(fmt.Errorf("writing the API server's etcd client certificate into %s: %w", m.cfg.APIServerClientCertDir, err))
		return
	}
	attrs := []any{"dir", m.cfg.APIServerClientCertDir, "serial", kp.Cert.SerialNumber.Text(16), "notAfter", kp.Cert.NotAfter.UTC(), "why", why}
	if cur != nil {
		m.logger.Info("rotated the API server's etcd client certificate", append(attrs, "oldSerial", cur.SerialNumber.Text(16))...)
	} else {
		m.logger.Info("wrote the API server's etcd client certificate", attrs...)
	}
	m.setAPIServerCert(kp.Cert, true, true)
}

// currentAPIServerCert returns the certificate in the directory when it can
// be kept: its files are all there, the key matches, it verifies against ca
// as a client certificate now, its CN is APIServerClientCN, and etcd-ca.crt
// is ca. Otherwise it returns nil and why.
func (m *Manager) currentAPIServerCert(ca *pki.CA) (*x509.Certificate, string) {
	m.mu.Lock()
	cached, verified := m.apiCert, m.apiVerified
	m.mu.Unlock()
	certPath, keyPath, caPath := m.apiserverPaths()
	if cached != nil && verified {
		// Cheap check every tick: someone may have removed the files.
		for _, p := range []string{certPath, keyPath, caPath} {
			if _, err := os.Stat(p); err != nil {
				return nil, fmt.Sprintf("%s is gone", p)
			}
		}
		return cached, ""
	}
	cert, err := m.readAPIServerCert(ca)
	if err != nil {
		return nil, err.Error()
	}
	return cert, ""
}

// readAPIServerCert reads and checks the files; ca nil skips the checks
// against the CA.
func (m *Manager) readAPIServerCert(ca *pki.CA) (*x509.Certificate, error) {
	certPath, keyPath, caPath := m.apiserverPaths()
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	kp, err := pki.ParseKeypairPEM(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s, %s: %w", certPath, keyPath, err)
	}
	if ca == nil {
		return kp.Cert, nil
	}
	if cn := kp.Cert.Subject.CommonName; cn != APIServerClientCN {
		return nil, fmt.Errorf("%s: CN %q is not %q", certPath, cn, APIServerClientCN)
	}
	if _, err := kp.Cert.Verify(x509.VerifyOptions{Roots: ca.CertPool(), CurrentTime: m.now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("%s does not verify against %s: %w", certPath, ca.Name(), err)
	}
	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(caPEM, ca.CertPEM()) {
		return nil, fmt.Errorf("%s is not the certificate of %s", caPath, ca.Name())
	}
	return kp.Cert, nil
}

// apiserverCertNeedsRotation applies the members' threshold through
// pki.NeedsRotation: reissue when less than RenewBefore is left. A
// certificate clamped to the CA's own expiry is not reissued before it
// expires (a new one would be no better; the CA needs rotating).
func (m *Manager) apiserverCertNeedsRotation(cert *x509.Certificate, ca *pki.CA) bool {
	now := m.now()
	if !now.Before(cert.NotAfter) {
		return true
	}
	if !cert.NotAfter.Before(ca.Cert().NotAfter) {
		return false
	}
	lifetime := cert.NotAfter.Sub(cert.NotBefore)
	if lifetime <= 0 {
		return true
	}
	return pki.NeedsRotation(cert, now, float64(m.cfg.RenewBefore)/float64(lifetime))
}

// setAPIServerCert records the certificate in the directory; verified says
// it was checked against the CA.
func (m *Manager) setAPIServerCert(cert *x509.Certificate, verified, written bool) {
	m.mu.Lock()
	changed := m.apiCert == nil || !m.apiCert.Equal(cert)
	m.apiCert = cert
	m.apiVerified = verified
	if written {
		m.apiWritten = m.now()
	}
	hadErr := m.apiErr != ""
	m.apiErr = ""
	m.mu.Unlock()
	if hadErr {
		m.logger.Info("the API server's etcd client certificate is good again", "dir", m.cfg.APIServerClientCertDir)
	}
	if changed && m.met.apiserverExpiry != nil {
		m.met.apiserverExpiry.Set(float64(cert.NotAfter.Unix()))
	}
}

func (m *Manager) setAPIServerErr(err error) {
	m.mu.Lock()
	same := m.apiErr == err.Error()
	m.apiErr = err.Error()
	m.mu.Unlock()
	if !same {
		m.logger.Error("API server client certificate", "err", err)
	}
}

func (m *Manager) apiserverStatusLocked() *APIServerCertStatus {
	if m.cfg.APIServerClientCertDir == "" {
		return nil
	}
	s := &APIServerCertStatus{Dir: m.cfg.APIServerClientCertDir, Written: m.apiWritten, Error: m.apiErr}
	if c := m.apiCert; c != nil {
		s.CommonName = c.Subject.CommonName
		s.Serial = c.SerialNumber.Text(16)
		s.NotBefore, s.NotAfter = c.NotBefore.UTC(), c.NotAfter.UTC()
	}
	return s
}

// pendingFile is one file of a set written by writeFileSetAtomic.
type pendingFile struct {
	path string
	data []byte
	perm os.FileMode
}

// writeFileSetAtomic writes files that belong together (a key and its
// certificate): every file is first written to a temp file beside it
// (created with mode 0600, chmod-ed to its mode, fsync-ed), and only when
// all are staged are they renamed into place one after the other and the
// directories fsync-ed. A failure while staging leaves every target as it
// was and removes the temp files, so a reader never sees a partial file,
// and sees a mismatched pair only for the instant between two renames.
func writeFileSetAtomic(files []pendingFile) (err error) {
	tmps := make([]string, 0, len(files))
	defer func() {
		if err != nil {
			for _, t := range tmps {
				_ = os.Remove(t)
			}
		}
	}()
	for _, f := range files {
		t, err := stageFile(f)
		if err != nil {
			return err
		}
		tmps = append(tmps, t)
	}
	for i, f := range files {
		if err := os.Rename(tmps[i], f.path); err != nil {
			return fmt.Errorf("writing %s: rename: %w", f.path, bare(err))
		}
	}
	tmps = nil
	dirs := map[string]bool{}
	for _, f := range files {
		dir := filepath.Dir(f.path)
		if dirs[dir] {
			continue
		}
		dirs[dir] = true
		if err := syncDir(dir); err != nil {
			return fmt.Errorf("writing %s: %w", f.path, err)
		}
	}
	return nil
}

func stageFile(f pendingFile) (string, error) {
	dir := filepath.Dir(f.path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("writing %s: creating directory: %w", f.path, err)
	}
	// os.CreateTemp opens with O_EXCL and mode 0600.
	tf, err := os.CreateTemp(dir, "."+filepath.Base(f.path)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("writing %s: creating temp file: %w", f.path, bare(err))
	}
	tmp := tf.Name()
	werr := func() error {
		if _, err := tf.Write(f.data); err != nil {
			return err
		}
		if err := tf.Chmod(f.perm); err != nil {
			return err
		}
		return tf.Sync()
	}()
	if cerr := tf.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("writing %s: %w", f.path, bare(werr))
	}
	return tmp, nil
}

// bare drops the random temp file name from an *os.PathError or
// *os.LinkError, so that the same failure gives the same message on every
// tick (it is logged when it changes); the callers name the target file.
func bare(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening directory %s for fsync: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}
