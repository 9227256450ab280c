package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"time"
)

const (
	// DefaultCAValidity is the lifetime of a new CA: ten years.
	DefaultCAValidity = 10 * 365 * 24 * time.Hour
	// DefaultLeafValidity is the lifetime of an issued certificate when the
	// request does not say: one year.
	DefaultLeafValidity = 365 * 24 * time.Hour
	// Backdate is how far NotBefore is set in the past, so a certificate is
	// valid at once on a peer whose clock is somewhat behind.
	Backdate = 5 * time.Minute
	// MinLeafValidity is the shortest lifetime Issue accepts; shorter
	// requests are errors (they would need rotation at once).
	MinLeafValidity = time.Minute
)

// CAOptions says how to create a CA. The zero value is a ten-year ECDSA
// P-256 CA whose common name is the CA's name.
type CAOptions struct {
	// KeyType is KeyECDSAP256 (default) or KeyRSA2048.
	KeyType KeyType
	// Validity is the CA's lifetime; zero means DefaultCAValidity.
	Validity time.Duration
	// CommonName overrides the subject common name (default: the CA name).
	CommonName string
	// Organization is the subject organization, if any.
	Organization []string
}

// Validate returns every problem with the options.
func (o CAOptions) Validate() error {
	var errs []error
	switch o.KeyType {
	case "", KeyECDSAP256, KeyRSA2048:
	default:
		errs = append(errs, fmt.Errorf("keyType: %q is not supported (want %q or %q)", o.KeyType, KeyECDSAP256, KeyRSA2048))
	}
	if o.Validity < 0 {
		errs = append(errs, fmt.Errorf("validity: %s is negative", o.Validity))
	} else if o.Validity != 0 && o.Validity < time.Hour {
		errs = append(errs, fmt.Errorf("validity: %s is shorter than the minimum of 1h for a CA", o.Validity))
	}
	return errors.Join(errs...)
}

// CA is a certificate authority: its certificate and private key. It issues
// leaf certificates with Issue; it is safe for concurrent use.
type CA struct {
	name    string
	url     string
	cert    *x509.Certificate
	certPEM []byte
	key     *PrivateKey
	clock   func() time.Time
	logger  *slog.Logger
}

// Name is the CA's name in the keystore ("kubernetes-ca").
func (ca *CA) Name() string { return ca.name }

// URL is the store URL of the object holding the CA.
func (ca *CA) URL() string { return ca.url }

// Cert is the CA certificate. Callers must not modify it.
func (ca *CA) Cert() *x509.Certificate { return ca.cert }

// CertPEM is the CA certificate, PEM-encoded (for --trusted-ca-file and the like).
func (ca *CA) CertPEM() []byte { return append([]byte(nil), ca.certPEM...) }

// CertPool returns a new pool holding only this CA's certificate.
func (ca *CA) CertPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// LogValue logs the CA's name and certificate identity, never the key.
func (ca *CA) LogValue() slog.Value {
	if ca == nil || ca.cert == nil {
		return slog.StringValue("<empty CA>")
	}
	return slog.GroupValue(slog.String("name", ca.name), slog.Any("cert", certLogValue(ca.cert)))
}

// String describes the CA; the key prints as REDACTED.
func (ca *CA) String() string {
	if ca == nil || ca.cert == nil {
		return "<empty CA>"
	}
	return fmt.Sprintf("ca{name=%q serial=%s notAfter=%s key=%s}", ca.name, ca.cert.SerialNumber.Text(16),
		ca.cert.NotAfter.UTC().Format("2006-01-02T15:04:05Z"), redacted)
}

// Format prints String for every verb.
func (ca *CA) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, ca.String()) }

// newSelfSignedCA creates a CA certificate and key.
func newSelfSignedCA(name string, opts CAOptions, now time.Time) (*x509.Certificate, *PrivateKey, error) {
	if err := opts.Validate(); err != nil {
		return nil, nil, fmt.Errorf("CA %s options: %w", name, err)
	}
	key, err := generateKey(opts.KeyType)
	if err != nil {
		return nil, nil, err
	}
	validity := opts.Validity
	if validity == 0 {
		validity = DefaultCAValidity
	}
	cn := opts.CommonName
	if cn == "" {
		cn = name
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	ski, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: opts.Organization},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// Leaves only: no intermediate CAs below ours.
		MaxPathLenZero: true,
		SubjectKeyId:   ski,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating CA %s certificate: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing new CA %s certificate: %w", name, err)
	}
	return cert, key, nil
}

// Usage says what an issued certificate is for.
type Usage int

const (
	// UsageServer is a TLS server certificate (ExtKeyUsage serverAuth).
	UsageServer Usage = iota + 1
	// UsageClient is a TLS client certificate (ExtKeyUsage clientAuth).
	UsageClient
	// UsagePeer is both: a member that serves and dials its peers (etcd
	// peers, etcd-manager peers).
	UsagePeer
)

// String names the usage.
func (u Usage) String() string {
	switch u {
	case UsageServer:
		return "server"
	case UsageClient:
		return "client"
	case UsagePeer:
		return "peer"
	}
	return fmt.Sprintf("Usage(%d)", int(u))
}

// extKeyUsages returns the extended key usages of u.
func (u Usage) extKeyUsages() []x509.ExtKeyUsage {
	switch u {
	case UsageServer:
		return []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	case UsageClient:
		return []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case UsagePeer:
		return []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	return nil
}

// CertRequest describes a leaf certificate to issue.
type CertRequest struct {
	// CommonName is the subject CN (for Kubernetes clients: the user name,
	// such as "system:node:ip-10-0-0-1" or "kubelet"). Required.
	CommonName string
	// Organization is the subject O (for Kubernetes clients: the groups,
	// such as "system:nodes").
	Organization []string
	// Usage is UsageServer, UsageClient or UsagePeer. Required.
	Usage Usage
	// DNSNames and IPs are the subject alternative names. A server or peer
	// certificate needs at least one of them.
	DNSNames []string
	IPs      []net.IP
	// Validity is the lifetime; zero means DefaultLeafValidity. A validity
	// reaching past the CA's own expiry is clamped to the CA's NotAfter (and
	// a warning logged): a leaf can never outlive its CA, and NeedsRotation
	// will ask for a new leaf once the CA has been rotated.
	Validity time.Duration
	// KeyType of the new key; empty means KeyECDSAP256.
	KeyType KeyType
}

// Validate returns every problem with the request, each naming its field.
func (r CertRequest) Validate() error {
	var errs []error
	if strings.TrimSpace(r.CommonName) == "" {
		errs = append(errs, errors.New("commonName: must not be empty"))
	}
	switch r.Usage {
	case UsageServer, UsageClient, UsagePeer:
	case 0:
		errs = append(errs, errors.New("usage: must be set (server, client or peer)"))
	default:
		errs = append(errs, fmt.Errorf("usage: %s is not server, client or peer", r.Usage))
	}
	for i, n := range r.DNSNames {
		if err := validateDNSName(n); err != nil {
			errs = append(errs, fmt.Errorf("dnsNames[%d]: %q: %w", i, n, err))
		}
	}
	for i, ip := range r.IPs {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			errs = append(errs, fmt.Errorf("ips[%d]: %v is not an IPv4 or IPv6 address", i, []byte(ip)))
		}
	}
	if (r.Usage == UsageServer || r.Usage == UsagePeer) && len(r.DNSNames) == 0 && len(r.IPs) == 0 {
		errs = append(errs, fmt.Errorf("dnsNames, ips: a %s certificate needs at least one DNS name or IP address", r.Usage))
	}
	if r.Validity < 0 {
		errs = append(errs, fmt.Errorf("validity: %s is negative", r.Validity))
	} else if r.Validity != 0 && r.Validity < MinLeafValidity {
		errs = append(errs, fmt.Errorf("validity: %s is shorter than the minimum %s", r.Validity, MinLeafValidity))
	}
	switch r.KeyType {
	case "", KeyECDSAP256, KeyRSA2048:
	default:
		errs = append(errs, fmt.Errorf("keyType: %q is not supported (want %q or %q)", r.KeyType, KeyECDSAP256, KeyRSA2048))
	}
	return errors.Join(errs...)
}

// validateDNSName checks a host name for a SAN: letters, digits and hyphens
// in labels of 1 to 63 characters, no hyphen at either end of a label, at
// most 253 characters, optionally starting with a "*." wildcard label.
func validateDNSName(n string) error {
	if n == "" {
		return errors.New("empty name")
	}
	if net.ParseIP(n) != nil {
		return errors.New("is an IP address; put it in IPs")
	}
	name := strings.TrimSuffix(n, ".")
	if len(name) > 253 {
		return fmt.Errorf("longer than 253 characters (%d)", len(name))
	}
	labels := strings.Split(name, ".")
	for i, l := range labels {
		if i == 0 && l == "*" && len(labels) > 1 {
			continue
		}
		if l == "" {
			return errors.New("empty label")
		}
		if len(l) > 63 {
			return fmt.Errorf("label %q longer than 63 characters", l)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with a hyphen", l)
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("label %q has invalid character %q", l, c)
			}
		}
	}
	return nil
}

// Issue creates a new key and a certificate for it signed by the CA.
// It returns an error naming the field for an invalid request, and an error
// when the CA has expired. See CertRequest.Validity for clamping.
func (ca *CA) Issue(req CertRequest) (*Keypair, error) {
	if ca == nil || ca.cert == nil || ca.key == nil {
		return nil, errors.New("issuing certificate: CA is empty")
	}
	if err := req.Validate(); err != nil {
		return nil, fmt.Errorf("issuing certificate %q from CA %s: %w", req.CommonName, ca.name, err)
	}
	now := ca.clock()
	if !now.Before(ca.cert.NotAfter) {
		return nil, fmt.Errorf("issuing certificate %q: CA %s expired at %s (%s); rotate the CA",
			req.CommonName, ca.name, ca.cert.NotAfter.UTC().Format(time.RFC3339), ca.url)
	}
	validity := req.Validity
	if validity == 0 {
		validity = DefaultLeafValidity
	}
	notAfter := now.Add(validity)
	if notAfter.After(ca.cert.NotAfter) {
		ca.logger.Warn("clamping certificate validity to the CA's expiry",
			"cn", req.CommonName, "ca", ca.name, "requested", validity, "notAfter", ca.cert.NotAfter)
		notAfter = ca.cert.NotAfter
	}
	if notAfter.Sub(now) < MinLeafValidity {
		return nil, fmt.Errorf("issuing certificate %q: CA %s expires at %s, less than %s from now; rotate the CA",
			req.CommonName, ca.name, ca.cert.NotAfter.UTC().Format(time.RFC3339), MinLeafValidity)
	}

	key, err := generateKey(req.KeyType)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	ski, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, err
	}
	ku := x509.KeyUsageDigitalSignature
	if key.Type() == KeyRSA2048 {
		// RSA key exchange (TLS 1.2 RSA suites) encrypts to the key.
		ku |= x509.KeyUsageKeyEncipherment
	}
	ips := make([]net.IP, len(req.IPs))
	for i, ip := range req.IPs {
		ips[i] = append(net.IP(nil), ip...)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: req.CommonName, Organization: req.Organization},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              notAfter,
		KeyUsage:              ku,
		ExtKeyUsage:           req.Usage.extKeyUsages(),
		BasicConstraintsValid: true,
		IsCA:                  false,
		DNSNames:              append([]string(nil), req.DNSNames...),
		IPAddresses:           ips,
		SubjectKeyId:          ski,
		AuthorityKeyId:        ca.cert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("issuing certificate %q from CA %s: %w", req.CommonName, ca.name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing issued certificate %q: %w", req.CommonName, err)
	}
	kp, err := newKeypair(cert, key)
	if err != nil {
		return nil, err
	}
	ca.logger.Debug("issued certificate", "ca", ca.name, "usage", req.Usage.String(), "cert", kp)
	return kp, nil
}

// randomSerial returns a random positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("generating serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// subjectKeyID is the leftmost 160 bits of the SHA-256 hash of the
// subjectPublicKey bit string (RFC 7093 section 2, method 1).
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encoding public key: %w", err)
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("decoding public key: %w", err)
	}
	sum := sha256.Sum256(spki.PublicKey.Bytes)
	return sum[:20], nil
}

// encodeCABundle is the stored form of a CA: the certificate, then the key.
func encodeCABundle(cert *x509.Certificate, key *PrivateKey) ([]byte, error) {
	keyPEM, err := marshalKeyPEM(key)
	if err != nil {
		return nil, err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	return append(out, keyPEM...), nil
}

// decodeCABundle parses a stored CA bundle: exactly one CERTIFICATE block of
// a CA certificate and one private key block matching it. Errors describe
// structure only, never content.
func decodeCABundle(data []byte) (*x509.Certificate, *PrivateKey, error) {
	var (
		cert *x509.Certificate
		key  *PrivateKey
		rest = data
	)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch b.Type {
		case "CERTIFICATE":
			if cert != nil {
				return nil, nil, errors.New("more than one CERTIFICATE block")
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("parsing certificate: %w", err)
			}
			cert = c
		case "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY":
			if key != nil {
				return nil, nil, errors.New("more than one private key block")
			}
			k, err := parseKeyDER(b)
			if err != nil {
				return nil, nil, err
			}
			key = k
		default:
			return nil, nil, fmt.Errorf("unexpected PEM block %q", b.Type)
		}
	}
	switch {
	case cert == nil && key == nil:
		return nil, nil, errors.New("not a PEM CA bundle: no PEM blocks found")
	case cert == nil:
		return nil, nil, errors.New("no CERTIFICATE block")
	case key == nil:
		return nil, nil, errors.New("no private key block")
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, nil, fmt.Errorf("certificate %q is not a CA certificate", cert.Subject.CommonName)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, nil, fmt.Errorf("private key does not match certificate %q", cert.Subject.CommonName)
	}
	return cert, key, nil
}
