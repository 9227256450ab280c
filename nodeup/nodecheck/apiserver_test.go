package nodecheck

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kopsnode/agents/nodeup/kuberender"
	"github.com/kopsnode/agents/pkg/bootstraptoken"
	"github.com/kopsnode/agents/pkg/testtools"
)

// tokenSource is where the tests say the bootstrap token came from.
const tokenSource = "s3://bucket/state/test.k8s.local/" + bootstraptoken.StoreKey

// apiFixture is a real kube-apiserver with the node bootstrap objects the
// control plane publishes (a bootstrap token Secret, the binding that lets
// the token's group create and read CSRs), reached by the name "kubernetes"
// (in the server certificate) through a fake resolver.
type apiFixture struct {
	t      *testing.T
	api    *testtools.KubeAPIServer
	admin  kubernetes.Interface
	tok    bootstraptoken.Token
	server string
	res    fakeResolver
}

func newAPIFixture(t *testing.T) *apiFixture {
	t.Helper()
	api := testtools.StartKubeAPIServer(t, testtools.KubeAPIOptions{})
	admin, err := kubernetes.NewForConfig(api.Admin)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(api.URL)
	if err != nil {
		t.Fatal(err)
	}
	f := &apiFixture{t: t, api: api, admin: admin, server: "https://kubernetes:" + u.Port(), res: fakeResolver{"kubernetes": {"127.0.0.1"}}}
	if f.tok, err = bootstraptoken.Generate(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	f.tokenSecret(ctx, f.tok, time.Time{})
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "kopsnode:node-bootstrapper"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:node-bootstrapper"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: bootstraptoken.ExtraGroup}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return f
}

// tokenSecret publishes a bootstrap token as the control plane does.
func (f *apiFixture) tokenSecret(ctx context.Context, tok bootstraptoken.Token, expires time.Time) {
	f.t.Helper()
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: bootstraptoken.SecretName(tok), Namespace: "kube-system"},
		Type:       corev1.SecretTypeBootstrapToken,
		Data: map[string][]byte{
			"token-id": []byte(tok.ID), "token-secret": []byte(tok.Secret),
			"usage-bootstrap-authentication": []byte("true"), "auth-extra-groups": []byte(bootstraptoken.ExtraGroup),
		},
	}
	if !expires.IsZero() {
		s.Data["expiration"] = []byte(expires.UTC().Format(time.RFC3339))
	}
	if _, err := f.admin.CoreV1().Secrets("kube-system").Create(ctx, s, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// worker is a TLS-bootstrapping node's files: the bootstrap kubeconfig
// with a token and the cluster CA, as nodeup writes them.
func (f *apiFixture) worker(tok bootstraptoken.Token) memFiles {
	return memFiles{
		testPaths.BootstrapKubeconfig: renderedKubeconfig(f.t, f.server, f.api.CAPEM, kuberender.Credentials{Token: tok.String()}),
		testPaths.CAFile:              f.api.CAPEM,
	}
}

func (f *apiFixture) run(files memFiles, node string) Report {
	return Run(context.Background(), Inputs{Files: files, Resolver: f.res, Paths: testPaths, NodeName: node,
		TokenSource: tokenSource, Timeout: 15 * time.Second,
		Units: fakeUnits{}, UnitNames: []string{"kubelet.service"}})
}

// eventually retries cond until it returns nil, for up to timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// createCSR sends the certificate request a bootstrapping kubelet sends,
// with the bootstrap token.
func (f *apiFixture) createCSR(ctx context.Context, tok bootstraptoken.Token, node string) (*certv1.CertificateSigningRequest, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}}}, key)
	if err != nil {
		f.t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(&rest.Config{Host: f.api.URL, BearerToken: tok.String(), TLSClientConfig: rest.TLSClientConfig{CAData: f.api.CAPEM}})
	if err != nil {
		f.t.Fatal(err)
	}
	return c.CertificatesV1().CertificateSigningRequests().Create(ctx, &certv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "node-csr-"},
		Spec: certv1.CertificateSigningRequestSpec{
			Request:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName: certv1.KubeAPIServerClientKubeletSignerName,
			Usages:     []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageClientAuth},
		},
	}, metav1.CreateOptions{})
}

// setReady sets the Node's Ready condition as its kubelet would.
func (f *apiFixture) setReady(ctx context.Context, name string, status corev1.ConditionStatus, reason, msg string) {
	f.t.Helper()
	n, err := f.admin.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: status, Reason: reason, Message: msg,
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	if _, err := f.admin.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// TestAgainstRealAPIServer checks a node's view of a real kube-apiserver:
// the API answers, a name that does not resolve, a wrong or expired
// bootstrap token, a CSR pending then denied, a Node Ready True then
// False, read with the kubelet's own certificate.
func TestAgainstRealAPIServer(t *testing.T) {
	f := newAPIFixture(t)
	ctx := context.Background()

	t.Run("API answers; no certificate and no CSR yet", func(t *testing.T) {
		var r Report
		// The bootstrap-token authenticator reads Secrets through an
		// informer: let it see the token.
		eventually(t, 30*time.Second, "the bootstrap token is accepted", func() error {
			r = f.run(f.worker(f.tok), "worker-0")
			if r.Certificate.Error != "" {
				return fmt.Errorf("%+v", r.Certificate)
			}
			return nil
		})
		a := r.API
		if a.Server != f.server || a.From != testPaths.BootstrapKubeconfig || !a.Resolves || fmt.Sprint(a.Addresses) != "[127.0.0.1]" ||
			!a.Answers || !a.Ready || !strings.HasPrefix(a.Readyz, "200 OK") || a.Error != "" {
			t.Errorf("api %+v", a)
		}
		c := r.Certificate
		if c.Issued || c.BootstrapToken == nil || c.BootstrapToken.ID != f.tok.ID || c.BootstrapToken.Rejected || len(c.CSRs) != 0 || c.Unknown != "" {
			t.Errorf("certificate %+v", c)
		}
		if !strings.Contains(r.Node.Unknown, "no client certificate") {
			t.Errorf("node %+v", r.Node)
		}
	})

	t.Run("API name does not resolve", func(t *testing.T) {
		files := f.worker(f.tok)
		files[testPaths.BootstrapKubeconfig] = renderedKubeconfig(t, "https://api.internal.nowhere.test", f.api.CAPEM, kuberender.Credentials{Token: f.tok.String()})
		r := f.run(files, "worker-0")
		if r.API.Resolves || r.API.Answers || !strings.Contains(r.API.Error, "resolving api.internal.nowhere.test") {
			t.Errorf("api %+v", r.API)
		}
		if !strings.Contains(r.Certificate.Unknown, "the API name does not resolve") || !strings.Contains(r.Node.Unknown, "no client certificate") {
			t.Errorf("certificate %+v node %+v", r.Certificate, r.Node)
		}
	})

	t.Run("API server with a CA the node does not trust", func(t *testing.T) {
		files := f.worker(f.tok)
		files[testPaths.BootstrapKubeconfig] = renderedKubeconfig(t, f.server, newTestCA(t).pem, kuberender.Credentials{Token: f.tok.String()})
		r := f.run(files, "worker-0")
		if !r.API.Resolves || r.API.Answers || !strings.Contains(r.API.Error, "certificate") {
			t.Errorf("api %+v", r.API)
		}
	})

	for _, tc := range []struct {
		name    string
		publish bool
		expires time.Time
	}{
		{"a wrong bootstrap token is refused", false, time.Time{}},
		{"an expired bootstrap token is refused", true, time.Now().Add(-time.Minute)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := bootstraptoken.Generate()
			if err != nil {
				t.Fatal(err)
			}
			if tc.publish {
				f.tokenSecret(ctx, tok, tc.expires)
			}
			r := f.run(f.worker(tok), "worker-0")
			c := r.Certificate
			if !r.API.Ready || c.Issued || c.BootstrapToken == nil || !c.BootstrapToken.Rejected || c.BootstrapToken.ID != tok.ID || c.BootstrapToken.Source != tokenSource {
				t.Fatalf("api %+v certificate %+v", r.API, c)
			}
			for _, want := range []string{"rejected bootstrap token " + tok.ID, "401", tokenSource} {
				if !strings.Contains(c.Error, want) {
					t.Errorf("error %q does not say %q", c.Error, want)
				}
			}
			if strings.Contains(c.Error, tok.Secret) {
				t.Errorf("error %q shows the token's secret", c.Error)
			}
		})
	}

	t.Run("a CSR pending, then denied with the reason", func(t *testing.T) {
		var mine *certv1.CertificateSigningRequest
		eventually(t, 30*time.Second, "the kubelet's CSR is created", func() (err error) {
			mine, err = f.createCSR(ctx, f.tok, "worker-1")
			return err
		})
		if _, err := f.createCSR(ctx, f.tok, "worker-other"); err != nil {
			t.Fatal(err)
		}
		r := f.run(f.worker(f.tok), "worker-1")
		c := r.Certificate
		if len(c.CSRs) != 1 || c.CSRs[0].Name != mine.Name || c.CSRs[0].State != CSRPending || c.CSRs[0].Requestor != "system:bootstrap:"+f.tok.ID {
			t.Fatalf("certificate %+v", c)
		}
		mine.Status.Conditions = append(mine.Status.Conditions, certv1.CertificateSigningRequestCondition{
			Type: certv1.CertificateDenied, Status: corev1.ConditionTrue, Reason: "NotInInventory", Message: "no machine worker-1 in the inventory",
		})
		if _, err := f.admin.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, mine.Name, mine, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		c = f.run(f.worker(f.tok), "worker-1").Certificate
		if len(c.CSRs) != 1 || c.CSRs[0].State != CSRDenied || c.CSRs[0].Reason != "NotInInventory" || c.CSRs[0].Message != "no machine worker-1 in the inventory" {
			t.Fatalf("certificate %+v", c)
		}
	})

	t.Run("Node Ready True, then False, read with the kubelet's certificate", func(t *testing.T) {
		const name = "worker-2"
		if _, err := f.admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		f.setReady(ctx, name, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status")
		cert, key := f.api.IssueCert(t, "system:node:"+name, []string{"system:nodes"}, false, nil, nil)
		files := f.worker(f.tok)
		files[testPaths.KubeletKubeconfig] = kubeletWrittenKubeconfig(t, f.server, f.api.CAPEM)
		files[kubeletCertPath] = append(append([]byte{}, cert...), key...)
		// The node name comes from the certificate, not the hostname.
		r := f.run(files, "some-hostname")
		if !r.Certificate.Issued || r.Certificate.Path != kubeletCertPath || !strings.Contains(r.Certificate.Subject, "CN=system:node:"+name) || r.Certificate.CSRs != nil {
			t.Errorf("certificate %+v", r.Certificate)
		}
		if r.API.From != testPaths.KubeletKubeconfig || !r.API.Ready {
			t.Errorf("api %+v", r.API)
		}
		n := r.Node
		if n.Name != name || n.Ready != "True" || n.Reason != "KubeletReady" || n.LastTransition.IsZero() || n.Error != "" || n.Unknown != "" {
			t.Errorf("node %+v", n)
		}

		f.setReady(ctx, name, corev1.ConditionFalse, "KubeletNotReady", "container runtime network not ready: cni plugin not initialized")
		n = f.run(files, name).Node
		if n.Ready != "False" || n.Reason != "KubeletNotReady" || !strings.Contains(n.Message, "cni plugin not initialized") {
			t.Errorf("node %+v", n)
		}
	})

	t.Run("a control-plane kubelet's embedded certificate, no Node yet", func(t *testing.T) {
		cert, key := f.api.IssueCert(t, "system:node:cp-0", []string{"system:nodes"}, false, nil, nil)
		files := memFiles{testPaths.KubeletKubeconfig: renderedKubeconfig(t, f.server, f.api.CAPEM, kuberender.Credentials{ClientCertPEM: cert, ClientKeyPEM: key})}
		r := f.run(files, "cp-0")
		if !r.Certificate.Issued || r.Certificate.Path != testPaths.KubeletKubeconfig || r.Certificate.BootstrapToken != nil {
			t.Errorf("certificate %+v", r.Certificate)
		}
		if r.Node.Name != "cp-0" || r.Node.Ready != "" || !strings.Contains(r.Node.Error, "no Node cp-0") {
			t.Errorf("node %+v", r.Node)
		}
	})

	t.Run("a certificate the API server does not trust", func(t *testing.T) {
		ca := newTestCA(t)
		cert, key := ca.issue(t, "system:node:worker-2", time.Now().Add(time.Hour))
		files := memFiles{testPaths.KubeletKubeconfig: renderedKubeconfig(t, f.server, f.api.CAPEM, kuberender.Credentials{ClientCertPEM: cert, ClientKeyPEM: key})}
		r := f.run(files, "worker-2")
		if !strings.Contains(r.Node.Error, "401") {
			t.Errorf("node %+v", r.Node)
		}
	})

	t.Run("API server stopped", func(t *testing.T) {
		f.api.Stop()
		defer f.api.Start(t)
		start := time.Now()
		r := f.run(f.worker(f.tok), "worker-1")
		if !r.API.Resolves || r.API.Answers || !strings.Contains(r.API.Error, "connection refused") || !strings.Contains(r.Certificate.Unknown, "does not answer") {
			t.Errorf("api %+v certificate %+v", r.API, r.Certificate)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("status took %s with the API server down", d)
		}
	})
}
