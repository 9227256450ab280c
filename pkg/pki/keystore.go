package pki

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/kopsnode/agents/pkg/store"
)

// Names of the CAs the suite uses. Each is a separate trust domain: a
// certificate issued by one does not verify under another, so (for example)
// an etcd client certificate cannot join the etcd peer mesh.
const (
	// CAKubernetes signs the API server's serving certificate, kubelet and
	// component client certificates, and every kubeconfig's client cert.
	CAKubernetes = "kubernetes-ca"
	// CAEtcdClients signs the certificates of etcd clients (kube-apiserver,
	// etcd-manager, backup tooling) and the client-port serving certificates
	// of every etcd cluster.
	CAEtcdClients = "etcd-clients-ca"
)

// CAEtcdPeers names the CA of the peer mesh of one etcd cluster
// ("etcd-peers-ca-main"): etcd members' peer certificates.
func CAEtcdPeers(etcdCluster string) string { return "etcd-peers-ca-" + etcdCluster }

// CAEtcdManager names the CA of the etcd-manager peer protocol of one etcd
// cluster ("etcd-manager-ca-main").
func CAEtcdManager(etcdCluster string) string { return "etcd-manager-ca-" + etcdCluster }

// Object names inside <prefix>/<ca-name>/.
const (
	// caBundleObject holds the CA certificate and private key as one PEM
	// bundle. It is the authoritative copy, created once with
	// create-if-absent, so concurrent creators agree on exactly one CA.
	caBundleObject = "ca.pem"
	// caCertObject holds the CA certificate alone, for readers that must
	// trust the CA but may not read its key.
	caCertObject = "ca.crt"
)

// DefaultRotationFraction is the threshold used by CheckCAs and suggested to
// callers of NeedsRotation: renew when less than a third of the lifetime is
// left.
const DefaultRotationFraction = 1.0 / 3

// Keystore keeps CAs in the state store under one prefix (by convention
// "<cluster>/pki"). It holds no mutable state and is safe for concurrent use.
type Keystore struct {
	store  store.Store
	prefix string
	logger *slog.Logger
	clock  func() time.Time
}

// NewKeystore returns a keystore on s under prefix ("<cluster>/pki"). A nil
// logger discards logs; a nil clock means time.Now.
func NewKeystore(s store.Store, prefix string, logger *slog.Logger, clock func() time.Time) (*Keystore, error) {
	if s == nil {
		return nil, errors.New("keystore: no state store")
	}
	prefix = strings.Trim(prefix, "/")
	if err := store.ValidatePrefix(prefix); err != nil {
		return nil, fmt.Errorf("keystore prefix in %s: %w", s.URL(), err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if clock == nil {
		clock = time.Now
	}
	return &Keystore{store: s, prefix: prefix, logger: logger, clock: clock}, nil
}

// ValidateCAName checks that name can be a CA name: 1 to 63 lower-case
// letters, digits and hyphens, not starting or ending with a hyphen.
func ValidateCAName(name string) error {
	if name == "" {
		return errors.New("CA name must not be empty")
	}
	if len(name) > 63 {
		return fmt.Errorf("CA name %q is longer than 63 characters", name)
	}
	if name[0] == '-' || name[len(name)-1] == '-' {
		return fmt.Errorf("CA name %q starts or ends with a hyphen", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("CA name %q has invalid character %q (want a-z, 0-9, -)", name, c)
		}
	}
	return nil
}

func (ks *Keystore) key(name, object string) string { return path.Join(ks.prefix, name, object) }

func (ks *Keystore) url(name, object string) string {
	return store.JoinURL(ks.store.URL(), ks.key(name, object))
}

// EnsureCA returns the CA called name, creating it with opts when the store
// has none. Creation is a create-if-absent write, so when several nodes race
// exactly one CA is created and every caller gets that one. opts only matter
// to the creator; an existing CA is returned as it is.
func (ks *Keystore) EnsureCA(ctx context.Context, name string, opts CAOptions) (*CA, error) {
	if err := ValidateCAName(name); err != nil {
		return nil, err
	}
	ca, err := ks.LoadCA(ctx, name)
	switch {
	case err == nil:
		return ca, ks.publishCert(ctx, ca)
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}

	cert, key, err := newSelfSignedCA(name, opts, ks.clock())
	if err != nil {
		return nil, err
	}
	bundle, err := encodeCABundle(cert, key)
	if err != nil {
		return nil, fmt.Errorf("encoding CA %s: %w", name, err)
	}
	_, err = ks.store.Put(ctx, ks.key(name, caBundleObject), bytes.NewReader(bundle), store.Condition{IfAbsent: true})
	switch {
	case errors.Is(err, store.ErrPrecondition):
		ks.logger.Info("another node created the CA first; using it", "ca", name, "url", ks.url(name, caBundleObject))
		ca, err = ks.LoadCA(ctx, name)
		if err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("storing new CA %s: %w", name, err)
	default:
		ca = ks.newCA(name, cert, key)
		ks.logger.Info("created CA", "ca", ca)
	}
	return ca, ks.publishCert(ctx, ca)
}

func (ks *Keystore) newCA(name string, cert *x509.Certificate, key *PrivateKey) *CA {
	return &CA{
		name:    name,
		url:     ks.url(name, caBundleObject),
		cert:    cert,
		certPEM: encodeCertPEM(cert),
		key:     key,
		clock:   ks.clock,
		logger:  ks.logger,
	}
}

// publishCert makes sure <name>/ca.crt holds the CA's certificate. It heals
// a creator that stopped between the bundle write and this one.
func (ks *Keystore) publishCert(ctx context.Context, ca *CA) error {
	k := ks.key(ca.name, caCertObject)
	check := func(data []byte) error {
		c, err := parseCertPEM(data)
		if err != nil {
			return fmt.Errorf("CA certificate %s: %w", ks.url(ca.name, caCertObject), err)
		}
		if !c.Equal(ca.cert) {
			return fmt.Errorf("CA certificate %s does not match the CA in %s; remove the stale copy", ks.url(ca.name, caCertObject), ca.url)
		}
		return nil
	}
	data, _, err := store.ReadAll(ctx, ks.store, k)
	if err == nil {
		return check(data)
	}
	if !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("reading CA certificate: %w", err)
	}
	_, err = ks.store.Put(ctx, k, bytes.NewReader(ca.certPEM), store.Condition{IfAbsent: true})
	if errors.Is(err, store.ErrPrecondition) {
		// Someone else published it meanwhile; it must be the same.
		data, _, err = store.ReadAll(ctx, ks.store, k)
		if err != nil {
			return fmt.Errorf("reading CA certificate: %w", err)
		}
		return check(data)
	}
	if err != nil {
		return fmt.Errorf("publishing CA certificate: %w", err)
	}
	return nil
}

// LoadCA reads the CA called name, certificate and key. A missing CA is an
// error wrapping store.ErrNotFound; a corrupt one is an error naming the
// object's URL.
func (ks *Keystore) LoadCA(ctx context.Context, name string) (*CA, error) {
	if err := ValidateCAName(name); err != nil {
		return nil, err
	}
	data, _, err := store.ReadAll(ctx, ks.store, ks.key(name, caBundleObject))
	if err != nil {
		return nil, fmt.Errorf("loading CA %s: %w", name, err)
	}
	cert, key, err := decodeCABundle(data)
	if err != nil {
		return nil, fmt.Errorf("loading CA %s from %s: %w", name, ks.url(name, caBundleObject), err)
	}
	return ks.newCA(name, cert, key), nil
}

// LoadCACert reads only the certificate of the CA called name (from
// <name>/ca.crt), for nodes that must trust the CA but hold no key.
func (ks *Keystore) LoadCACert(ctx context.Context, name string) (*x509.Certificate, error) {
	if err := ValidateCAName(name); err != nil {
		return nil, err
	}
	data, _, err := store.ReadAll(ctx, ks.store, ks.key(name, caCertObject))
	if err != nil {
		return nil, fmt.Errorf("loading CA certificate %s: %w", name, err)
	}
	c, err := parseCertPEM(data)
	if err != nil {
		return nil, fmt.Errorf("loading CA certificate %s from %s: %w", name, ks.url(name, caCertObject), err)
	}
	if !c.IsCA {
		return nil, fmt.Errorf("loading CA certificate %s from %s: certificate %q is not a CA", name, ks.url(name, caCertObject), c.Subject.CommonName)
	}
	return c, nil
}

// ListCAs returns the names of the CAs in the keystore, sorted.
func (ks *Keystore) ListCAs(ctx context.Context) ([]string, error) {
	p := ks.prefix
	if p != "" {
		p += "/"
	}
	infos, err := ks.store.List(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("listing CAs: %w", err)
	}
	var names []string
	for _, in := range infos {
		rel := strings.TrimPrefix(in.Key, p)
		name, obj, ok := strings.Cut(rel, "/")
		if ok && obj == caBundleObject && ValidateCAName(name) == nil {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names, nil
}

// CAStatus is the expiry state of one CA, as CheckCAs reports it.
type CAStatus struct {
	Name          string        `json:"name"`
	URL           string        `json:"url"`
	Serial        string        `json:"serial,omitempty"`
	NotBefore     time.Time     `json:"notBefore"`
	NotAfter      time.Time     `json:"notAfter"`
	Remaining     time.Duration `json:"remaining"`
	NeedsRotation bool          `json:"needsRotation"`
	Expired       bool          `json:"expired"`
	// Error is set when the CA could not be read or parsed.
	Error string `json:"error,omitempty"`
}

// CheckCAs reads every CA in the keystore and reports its expiry. A CA with
// less than DefaultRotationFraction of its lifetime left is logged as a
// warning, an expired one as an error. CAs that cannot be read appear with
// Error set, and their errors are also returned joined. Rotating a CA is not
// automated (see docs/pki.md).
func (ks *Keystore) CheckCAs(ctx context.Context) ([]CAStatus, error) {
	names, err := ks.ListCAs(ctx)
	if err != nil {
		return nil, err
	}
	now := ks.clock()
	var (
		out  []CAStatus
		errs []error
	)
	for _, name := range names {
		st := CAStatus{Name: name, URL: ks.url(name, caBundleObject)}
		ca, err := ks.LoadCA(ctx, name)
		if err != nil {
			st.Error = err.Error()
			errs = append(errs, err)
			out = append(out, st)
			continue
		}
		c := ca.cert
		st.Serial = c.SerialNumber.Text(16)
		st.NotBefore, st.NotAfter = c.NotBefore, c.NotAfter
		st.Remaining = RemainingLife(c, now)
		st.Expired = st.Remaining <= 0
		st.NeedsRotation = NeedsRotation(c, now, DefaultRotationFraction)
		switch {
		case st.Expired:
			ks.logger.Error("CA has expired", "ca", name, "notAfter", c.NotAfter, "url", st.URL)
		case st.NeedsRotation:
			ks.logger.Warn("CA is near expiry and should be rotated", "ca", name, "notAfter", c.NotAfter, "remaining", st.Remaining.Round(time.Hour).String(), "url", st.URL)
		}
		out = append(out, st)
	}
	return out, errors.Join(errs...)
}
