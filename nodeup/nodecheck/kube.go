package nodecheck

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kopsnode/agents/pkg/bootstraptoken"
)

// nodeUserPrefix is the user name prefix of kubelet client certificates.
const nodeUserPrefix = "system:node:"

// CheckCertificate reports the kubelet's client certificate from its
// kubeconfig (loaded by LoadKubeconfig, loadErr its error). A missing
// kubeconfig means not issued yet, which is not an error.
func CheckCertificate(k *Kubeconfig, loadErr error, kubeconfigPath string, now time.Time) Certificate {
	var c Certificate
	switch {
	case errors.Is(loadErr, fs.ErrNotExist):
		return c
	case loadErr != nil:
		c.Error = fmt.Sprintf("reading the kubelet kubeconfig: %v", loadErr)
		return c
	}
	c.Path = k.CertPath
	if c.Path == "" {
		c.Path = k.Path
	}
	cert, err := firstCert(k.CertPEM)
	if err != nil {
		c.Error = fmt.Sprintf("%s: client certificate: %v", c.Path, err)
		return c
	}
	c.Issued = true
	c.Subject = cert.Subject.String()
	c.NotBefore, c.NotAfter = cert.NotBefore.UTC(), cert.NotAfter.UTC()
	if now.After(cert.NotAfter) {
		c.Expired = true
		c.Error = fmt.Sprintf("%s: the client certificate expired at %s", c.Path, c.NotAfter.Format(time.RFC3339))
	}
	return c
}

func firstCert(b []byte) (*x509.Certificate, error) {
	if len(b) == 0 {
		return nil, errors.New("none")
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no CERTIFICATE block")
		}
		if blk.Type == "CERTIFICATE" {
			return x509.ParseCertificate(blk.Bytes)
		}
	}
}

// certNodeName is the node name in a kubelet client certificate's CN
// (system:node:<name>), or "".
func certNodeName(k *Kubeconfig) string {
	if k == nil {
		return ""
	}
	c, err := firstCert(k.CertPEM)
	if err != nil {
		return ""
	}
	name, ok := strings.CutPrefix(c.Subject.CommonName, nodeUserPrefix)
	if !ok {
		return ""
	}
	return name
}

// BootstrapTokenOf is the public part of a bootstrap kubeconfig's token,
// with the place it came from.
func BootstrapTokenOf(k *Kubeconfig, source string) (*Token, error) {
	t, err := bootstraptoken.Parse(k.Token)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k.Path, err)
	}
	return &Token{ID: t.ID, Source: source}, nil
}

// CheckCSRs lists the node's certificate signing requests (kubelet client
// certificates for CN system:node:<nodeName>) with a client that holds the
// bootstrap token tok (the system:node-bootstrapper role may list CSRs),
// newest first, into c. A token the API server rejects is named with the
// place it came from.
func CheckCSRs(ctx context.Context, cs kubernetes.Interface, nodeName string, tok *Token, c *Certificate) {
	c.BootstrapToken = tok
	// Only kubelet client requests: a busy cluster has many others.
	list, err := cs.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{
		FieldSelector: "spec.signerName=" + certv1.KubeAPIServerClientKubeletSignerName,
	})
	switch {
	case err == nil:
	case apierrors.IsUnauthorized(err):
		tok.Rejected = true
		c.Error = fmt.Sprintf("the API server rejected bootstrap token %s (401 Unauthorized): expired, deleted, or not yet published by the control plane%s", tok.ID, fromSource(tok.Source))
		return
	case apierrors.IsForbidden(err):
		c.Error = fmt.Sprintf("bootstrap token %s may not list certificate signing requests (is it bound to system:node-bootstrapper?): %v", tok.ID, err)
		return
	default:
		c.Error = fmt.Sprintf("listing certificate signing requests: %v", err)
		return
	}
	want := nodeUserPrefix + nodeName
	c.CSRs = nil
	for _, r := range list.Items {
		if r.Spec.SignerName != certv1.KubeAPIServerClientKubeletSignerName || requestCN(r.Spec.Request) != want {
			continue
		}
		st, reason, msg := CSRState(r.Status.Conditions, len(r.Status.Certificate) > 0)
		c.CSRs = append(c.CSRs, CSR{Name: r.Name, Created: r.CreationTimestamp.UTC(), Requestor: r.Spec.Username, State: st, Reason: reason, Message: msg})
	}
	sort.SliceStable(c.CSRs, func(i, j int) bool {
		if !c.CSRs[i].Created.Equal(c.CSRs[j].Created) {
			return c.CSRs[i].Created.After(c.CSRs[j].Created)
		}
		return c.CSRs[i].Name < c.CSRs[j].Name
	})
}

func fromSource(s string) string {
	if s == "" {
		return ""
	}
	return " (the token is " + s + ")"
}

// requestCN is the CN of a PEM certificate request, or "".
func requestCN(b []byte) string {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return ""
	}
	r, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return ""
	}
	return r.Subject.CommonName
}

// CSRState is a CSR's state from its conditions: denied or failed win
// over approved; an approved request with a certificate is issued.
func CSRState(conds []certv1.CertificateSigningRequestCondition, hasCert bool) (state, reason, message string) {
	var approved *certv1.CertificateSigningRequestCondition
	for i, c := range conds {
		if c.Status == corev1.ConditionFalse {
			continue
		}
		switch c.Type {
		case certv1.CertificateDenied:
			return CSRDenied, c.Reason, c.Message
		case certv1.CertificateFailed:
			return CSRFailed, c.Reason, c.Message
		case certv1.CertificateApproved:
			approved = &conds[i]
		}
	}
	switch {
	case approved != nil && hasCert:
		return CSRIssued, approved.Reason, approved.Message
	case approved != nil:
		return CSRApproved, approved.Reason, approved.Message
	}
	return CSRPending, "", ""
}

// CheckNode reads the Node's Ready condition with a client that holds the
// kubelet's credentials.
func CheckNode(ctx context.Context, cs kubernetes.Interface, name string) Node {
	n := Node{Name: name}
	if name == "" {
		n.Unknown = "no node name"
		return n
	}
	obj, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil:
	case apierrors.IsNotFound(err):
		n.Error = fmt.Sprintf("no Node %s: the kubelet has not registered it", name)
		return n
	case apierrors.IsUnauthorized(err):
		n.Error = "the API server rejected the kubelet's client certificate (401 Unauthorized)"
		return n
	default:
		n.Error = fmt.Sprintf("reading Node %s: %v", name, err)
		return n
	}
	for _, c := range obj.Status.Conditions {
		if c.Type == corev1.NodeReady {
			n.Ready, n.Reason, n.Message = string(c.Status), c.Reason, c.Message
			n.LastTransition = c.LastTransitionTime.UTC()
			return n
		}
	}
	n.Error = fmt.Sprintf("Node %s has no Ready condition yet", name)
	return n
}

// nodeNameOf prefers the name in the kubelet's certificate, which is the
// Node the API server lets that certificate read.
func nodeNameOf(k *Kubeconfig, fallback string) string {
	if n := certNodeName(k); n != "" {
		return n
	}
	return fallback
}

func noKubeconfig(kubeletErr, bootErr error) string {
	var why []string
	for _, e := range []error{kubeletErr, bootErr} {
		if e != nil {
			why = append(why, e.Error())
		}
	}
	return fmt.Sprintf("no kubeconfig to find the API server in (%s)", strings.Join(why, "; "))
}

func bootstrapUnknown(p string, err error) string {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Sprintf("certificate requests not read: no bootstrap kubeconfig at %s (nodeup writes it on nodes that join by TLS bootstrap; see its failed tasks)", p)
	}
	return fmt.Sprintf("certificate requests not read: %v", err)
}
