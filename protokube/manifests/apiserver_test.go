package manifests

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kopsnode/agents/pkg/bootstraptoken"
	"github.com/kopsnode/agents/pkg/cli"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/file"
	"github.com/kopsnode/agents/pkg/testtools"
)

func objectStatus(st Status, key string) (ObjectStatus, bool) {
	for _, o := range st.Objects {
		if o.Key() == key {
			return o, true
		}
	}
	return ObjectStatus{}, false
}

// The whole life of the applier against a real kube-apiserver and etcd:
// waiting for an API server that is not up, the first apply, the status,
// objects changed by hand put back, a changed configuration re-applied
// (including a DNS address, which replaces the Service), the bootstrap
// token rotated on a fake clock (new Secret applied, old one kept and both
// authenticating a kubelet's CSR, pruned once it expired), a token of the
// old format migrated, and the API server refusing a token whose Secret's
// expiration has passed.
func TestAgainstRealAPIServer(t *testing.T) {
	api := testtools.PrepareKubeAPIServer(t, testtools.KubeAPIOptions{})
	dir := t.TempDir()
	st, err := file.New(filepath.Join(dir, "store"), file.Options{CreateRoot: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	// The daemon's clock: the tokens' creation, expiry and rotation follow
	// it, while the API server checks the Secrets' expiration against the
	// real one.
	clock := &fakeClock{now: time.Now().UTC().Truncate(time.Second)}
	first, err := bootstraptoken.Issuer{Store: st, Cluster: testCluster, Now: clock.Now}.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tok := first.Tokens.Current.Token
	cfgFile := filepath.Join(dir, "nodeconfig.yaml")
	writeNodeConfig(t, cfgFile, "", "")

	cfg := DefaultConfig()
	cfg.ConfigFile, cfg.Store.URL, cfg.Kubeconfig = cfgFile, st.URL(), api.AdminKubeconfig
	cfg.Interval, cfg.WaitInterval, cfg.StatusListen = 2*time.Second, 200*time.Millisecond, "127.0.0.1:0"
	logs := &syncBuffer{}
	d, err := Start(ctx, cfg, Deps{Logger: slog.New(slog.NewTextHandler(logs, nil)), Store: st, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if t.Failed() {
			t.Logf("--- manifests log ---\n%s", logs.String())
		}
	})
	statusURL := "http://" + d.StatusAddr()

	// The API server is not up: the daemon waits, says so, and is unhealthy.
	eventually(t, 20*time.Second, "waiting reported", func() error {
		s := d.Status()
		if s.Passes < 2 || s.APIReady || !strings.Contains(s.Error, "does not answer") || !strings.Contains(s.Error, api.URL) {
			return fmt.Errorf("status %+v", s)
		}
		if !strings.Contains(logs.String(), "waiting for the API server") {
			return fmt.Errorf("no waiting log line")
		}
		return nil
	})
	if code, body := httpGet(t, statusURL+"/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "does not answer") {
		t.Errorf("/healthz while waiting: %d %s", code, body)
	}

	api.Start(t)
	cs, err := kubernetes.NewForConfig(api.Admin)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "first apply", func() error {
		if s := d.Status(); !s.Ready || len(s.Objects) != 11 {
			return fmt.Errorf("status %+v", s)
		}
		return nil
	})

	t.Run("objects", func(t *testing.T) {
		sec, err := cs.CoreV1().Secrets("kube-system").Get(ctx, bootstraptoken.SecretName(tok), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if sec.Type != corev1.SecretTypeBootstrapToken || string(sec.Data["token-secret"]) != tok.Secret || string(sec.Data["auth-extra-groups"]) != bootstraptoken.ExtraGroup ||
			string(sec.Data["expiration"]) != first.Tokens.Current.Expires.Format(time.RFC3339) {
			t.Errorf("token secret %s: type %s data %v, want expiration %s", sec.Name, sec.Type, sec.Data, first.Tokens.Current.Expires.Format(time.RFC3339))
		}
		if !managedBy(sec.ManagedFields) {
			t.Errorf("secret not managed by %s: %+v", FieldManager, sec.ManagedFields)
		}
		for _, n := range []string{"kopsnode:node-bootstrapper", "kopsnode:node-autoapprove-bootstrap", "kopsnode:node-autoapprove-certificate-rotation", "kopsnode:node-proxier", "system:coredns"} {
			b, err := cs.RbacV1().ClusterRoleBindings().Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				t.Errorf("binding %s: %v", n, err)
			} else if b.Labels[ManagedByLabel] != ManagedByValue {
				t.Errorf("binding %s labels %v", n, b.Labels)
			}
		}
		proxier, err := cs.RbacV1().ClusterRoleBindings().Get(ctx, "kopsnode:node-proxier", metav1.GetOptions{})
		if err == nil && (proxier.RoleRef.Name != "system:node-proxier" || proxier.Subjects[0].Name != "system:nodes") {
			t.Errorf("node-proxier binding %+v %+v", proxier.RoleRef, proxier.Subjects)
		}
		dep, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if *dep.Spec.Replicas != 2 || dep.Spec.Template.Spec.Containers[0].Image != CoreDNSImage {
			t.Errorf("coredns deployment replicas %d image %s", *dep.Spec.Replicas, dep.Spec.Template.Spec.Containers[0].Image)
		}
		svc, err := cs.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if svc.Spec.ClusterIP != "100.64.0.10" {
			t.Errorf("kube-dns at %s, want 100.64.0.10", svc.Spec.ClusterIP)
		}
		cm, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(cm.Data["Corefile"], "kubernetes cluster.local ") {
			t.Errorf("Corefile:\n%s", cm.Data["Corefile"])
		}
		if _, err := cs.CoreV1().ServiceAccounts("kube-system").Get(ctx, "coredns", metav1.GetOptions{}); err != nil {
			t.Error(err)
		}
		if _, err := cs.RbacV1().ClusterRoles().Get(ctx, "system:coredns", metav1.GetOptions{}); err != nil {
			t.Error(err)
		}
	})

	t.Run("status", func(t *testing.T) {
		// Later passes find nothing to change.
		eventually(t, 20*time.Second, "a pass with nothing to change", func() error {
			s, err := FetchStatus(ctx, http.DefaultClient, d.StatusAddr())
			if err != nil {
				return err
			}
			for _, o := range s.Objects {
				if o.Result != ResultUnchanged || o.Changes != 1 || o.ResourceVersion == "" {
					return fmt.Errorf("%s: %+v", o.Key(), o)
				}
			}
			return nil
		})
		if code, body := httpGet(t, statusURL+"/healthz"); code != http.StatusOK {
			t.Errorf("/healthz after applying: %d %s", code, body)
		}
		if _, body := httpGet(t, statusURL+"/metrics"); !strings.Contains(body, `protokube_manifests_applies_total{kind="Deployment",result="created"} 1`) ||
			!strings.Contains(body, "protokube_manifests_api_ready 1") {
			t.Errorf("metrics lack the applies:\n%s", grepLines(body, "protokube_manifests"))
		}
		app := &cli.App{Name: "protokube", Commands: []*cli.Command{StatusCommand()}}
		var out, errOut bytes.Buffer
		env := &cli.Env{Stdout: &out, Stderr: &errOut, Stdin: strings.NewReader("")}
		if code := app.Run(ctx, env, []string{"manifests-status", "--address", d.StatusAddr()}); code != 0 {
			t.Fatalf("manifests-status: exit %d: %s", code, errOut.String())
		}
		for _, s := range []string{"cluster " + testCluster + ": ready", "Deployment/kube-system/coredns", "Secret/kube-system/" + bootstraptoken.SecretName(tok), "unchanged",
			"node bootstrap token " + tok.ID + ", expires " + first.Tokens.Current.Expires.Format(time.RFC3339) + "; Secrets applied for " + tok.ID} {
			if !strings.Contains(out.String(), s) {
				t.Errorf("manifests-status lacks %q:\n%s", s, out.String())
			}
		}
		out.Reset()
		if code := app.Run(ctx, env, []string{"manifests-status", "--address", d.StatusAddr(), "-o", "json"}); code != 0 {
			t.Fatalf("manifests-status -o json: exit %d: %s", code, errOut.String())
		}
		var js Status
		if err := json.Unmarshal(out.Bytes(), &js); err != nil || !js.Ready || len(js.Objects) != 11 || js.BootstrapToken == nil || js.BootstrapToken.Current != tok.ID {
			t.Errorf("json status (%v): %s", err, out.String())
		}
		if strings.Contains(out.String(), tok.Secret) || strings.Contains(logs.String(), tok.Secret) {
			t.Error("the token's secret appears in the status or the log")
		}
	})

	t.Run("changed by hand is put back", func(t *testing.T) {
		scale, err := cs.AppsV1().Deployments("kube-system").GetScale(ctx, "coredns", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		scale.Spec.Replicas = 5
		if _, err := cs.AppsV1().Deployments("kube-system").UpdateScale(ctx, "coredns", scale, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := cs.CoreV1().ConfigMaps("kube-system").Delete(ctx, "coredns", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "replicas and ConfigMap restored", func() error {
			dep, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if *dep.Spec.Replicas != 2 {
				return fmt.Errorf("replicas %d", *dep.Spec.Replicas)
			}
			_, err = cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
			return err
		})
		eventually(t, 10*time.Second, "status counts the repairs", func() error {
			s := d.Status()
			dep, _ := objectStatus(s, "Deployment/kube-system/coredns")
			cm, _ := objectStatus(s, "ConfigMap/kube-system/coredns")
			if dep.Changes < 2 || cm.Changes < 2 {
				return fmt.Errorf("deployment %+v, configmap %+v", dep, cm)
			}
			return nil
		})
		if !strings.Contains(logs.String(), "result=created") || !strings.Contains(logs.String(), "result=updated") {
			t.Errorf("log does not say what was applied:\n%s", logs.String())
		}
	})

	t.Run("changed configuration is re-applied", func(t *testing.T) {
		writeNodeConfig(t, cfgFile, "example.internal", "100.64.0.20")
		eventually(t, 30*time.Second, "new Corefile and DNS address", func() error {
			cm, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if !strings.Contains(cm.Data["Corefile"], "kubernetes example.internal ") {
				return fmt.Errorf("Corefile not updated")
			}
			svc, err := cs.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if svc.Spec.ClusterIP != "100.64.0.20" {
				return fmt.Errorf("kube-dns at %s", svc.Spec.ClusterIP)
			}
			return nil
		})
		// The pass that recreated the Service records it when it ends.
		eventually(t, 10*time.Second, "status counts the Service replacement", func() error {
			if o, _ := objectStatus(d.Status(), "Service/kube-system/kube-dns"); o.Changes < 2 {
				return fmt.Errorf("service status %+v", o)
			}
			return nil
		})
		if !strings.Contains(logs.String(), "result="+ResultRecreated) {
			t.Errorf("the Service replacement is not logged")
		}
	})

	csrPEM := nodeCSR(t, "system:node:worker-1")
	createCSR := func(bearer string) error {
		c, err := kubernetes.NewForConfig(&rest.Config{Host: api.URL, BearerToken: bearer, TLSClientConfig: rest.TLSClientConfig{CAData: api.CAPEM}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.CertificatesV1().CertificateSigningRequests().Create(ctx, &certificatesv1.CertificateSigningRequest{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "node-csr-"},
			Spec: certificatesv1.CertificateSigningRequestSpec{
				Request:    csrPEM,
				SignerName: certificatesv1.KubeAPIServerClientKubeletSignerName,
				Usages:     []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth},
			},
		}, metav1.CreateOptions{})
		return err
	}
	secretExpiration := func(tk bootstraptoken.Token) (string, error) {
		sec, err := cs.CoreV1().Secrets("kube-system").Get(ctx, bootstraptoken.SecretName(tk), metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		return string(sec.Data["expiration"]), nil
	}

	var old bootstraptoken.Issued
	t.Run("rotation applies the new token's Secret and keeps the old one", func(t *testing.T) {
		// 17 of the token's 24 hours have passed: less than a third is left.
		clock.Advance(17 * time.Hour)
		var cur bootstraptoken.Tokens
		eventually(t, 30*time.Second, "rotated in the store", func() error {
			ts, _, err := bootstraptoken.ReadTokens(ctx, st, testCluster)
			if err != nil {
				return err
			}
			if ts.Current.Token == tok {
				return fmt.Errorf("not rotated yet")
			}
			cur = ts
			return nil
		})
		if len(cur.Previous) != 1 || cur.Previous[0] != first.Tokens.Current || !cur.Current.Created.Equal(clock.Now()) {
			t.Fatalf("stored after rotation: %+v", cur)
		}
		eventually(t, 30*time.Second, "both Secrets with their expiration", func() error {
			for _, i := range []bootstraptoken.Issued{cur.Current, cur.Previous[0]} {
				exp, err := secretExpiration(i.Token)
				if err != nil {
					return err
				}
				if exp != i.Expires.Format(time.RFC3339) {
					return fmt.Errorf("Secret of %s: expiration %q, want %s", i.Token.ID, exp, i.Expires.Format(time.RFC3339))
				}
			}
			return nil
		})
		eventually(t, 10*time.Second, "status shows the rotation", func() error {
			s := d.Status()
			if bt := s.BootstrapToken; bt == nil || bt.Current != cur.Current.Token.ID || len(bt.Valid) != 2 || bt.LastRotation.IsZero() || !s.Ready {
				return fmt.Errorf("status %+v, token %+v", s, s.BootstrapToken)
			}
			return nil
		})
		if !strings.Contains(logs.String(), "rotated the node bootstrap token") {
			t.Error("the rotation is not logged")
		}
		if strings.Contains(logs.String(), cur.Current.Token.Secret) {
			t.Error("the new token's secret is in the log")
		}
		// A machine that read the old token before the rotation joins, as
		// does one with the new token.
		eventually(t, 30*time.Second, "the new token authenticates a kubelet's CSR", func() error { return createCSR(cur.Current.Token.String()) })
		if err := createCSR(tok.String()); err != nil {
			t.Errorf("the old token, still valid, was refused: %v", err)
		}
		old, tok = cur.Previous[0], cur.Current.Token
	})

	t.Run("an expired token's Secret is pruned", func(t *testing.T) {
		// 25h: the first token (24h) expired; the second (17h) has 16 of
		// its 24 hours left and stays current.
		clock.Advance(8 * time.Hour)
		eventually(t, 30*time.Second, "old Secret pruned", func() error {
			if _, err := cs.CoreV1().Secrets("kube-system").Get(ctx, bootstraptoken.SecretName(old.Token), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("the expired token's Secret is still there (%v)", err)
			}
			_, err := secretExpiration(tok)
			return err
		})
		eventually(t, 10*time.Second, "status lists the pruned Secret", func() error {
			for _, p := range d.Status().Pruned {
				if p.Name == bootstraptoken.SecretName(old.Token) {
					return nil
				}
			}
			return fmt.Errorf("status does not list the pruned Secret: %+v", d.Status().Pruned)
		})
		if got, err := bootstraptoken.Read(ctx, st, testCluster); err != nil || got != tok {
			t.Errorf("current token %v, %v; want %s unchanged", got, err, tok.ID)
		}
	})

	t.Run("a token of the old format is replaced and expires", func(t *testing.T) {
		legacy, err := bootstraptoken.Generate()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Put(ctx, bootstraptoken.Key(testCluster), strings.NewReader(legacy.String()+"\n"), store.Condition{}); err != nil {
			t.Fatal(err)
		}
		var cur bootstraptoken.Tokens
		eventually(t, 30*time.Second, "migrated", func() error {
			ts, _, err := bootstraptoken.ReadTokens(ctx, st, testCluster)
			if err != nil {
				return err
			}
			if ts.Current.Token == legacy || ts.Current.Expires.IsZero() {
				return fmt.Errorf("not migrated yet: %+v", ts.Current.Token.ID)
			}
			cur = ts
			return nil
		})
		if len(cur.Previous) != 1 || cur.Previous[0].Token != legacy || !cur.Previous[0].Expires.Equal(clock.Now().Add(8*time.Hour)) {
			t.Fatalf("the old-format token after migration: %+v", cur.Previous)
		}
		eventually(t, 30*time.Second, "the old-format token's Secret expires", func() error {
			exp, err := secretExpiration(legacy)
			if err != nil {
				return err
			}
			if exp != cur.Previous[0].Expires.Format(time.RFC3339) {
				return fmt.Errorf("expiration %q", exp)
			}
			_, err = secretExpiration(cur.Current.Token)
			return err
		})
		tok = cur.Current.Token
	})

	t.Run("unreadable token: the rest is applied, nothing pruned, nothing overwritten", func(t *testing.T) {
		good, _, err := store.ReadAll(ctx, st, bootstraptoken.Key(testCluster))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Put(ctx, bootstraptoken.Key(testCluster), strings.NewReader("not a token"), store.Condition{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "input error reported", func() error {
			s := d.Status()
			if s.Ready || len(s.InputErrors) == 0 || !strings.Contains(s.InputErrors[0], "bootstrap token") || !s.APIReady {
				return fmt.Errorf("status %+v", s)
			}
			return nil
		})
		if _, err := cs.CoreV1().Secrets("kube-system").Get(ctx, bootstraptoken.SecretName(tok), metav1.GetOptions{}); err != nil {
			t.Errorf("the live token Secret was removed while the store could not be read: %v", err)
		}
		if b, _, err := store.ReadAll(ctx, st, bootstraptoken.Key(testCluster)); err != nil || string(b) != "not a token" {
			t.Errorf("the unreadable object was overwritten: %q, %v", b, err)
		}
		if _, err := st.Put(ctx, bootstraptoken.Key(testCluster), bytes.NewReader(good), store.Condition{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 90*time.Second, "ready again", func() error {
			if s := d.Status(); !s.Ready {
				return fmt.Errorf("status %+v", s)
			}
			return nil
		})
	})

	t.Run("a pass that read the store before another node's rotation prunes no new Secret", func(t *testing.T) {
		// A second control-plane node's reconciler whose view of the store
		// predates the rotation: it wants no token Secret at all.
		r2, err := NewReconciler(cfg, Deps{Store: st, Registry: prometheus.NewRegistry(), Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		objs, err := Objects(Inputs{ClusterDomain: "example.internal", DNSIP: netip.MustParseAddr("100.64.0.20")})
		if err != nil {
			t.Fatal(err)
		}
		before, err := cs.CoreV1().Secrets("kube-system").Get(ctx, bootstraptoken.SecretName(tok), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		dc, err := dynamic.NewForConfig(api.Admin)
		if err != nil {
			t.Fatal(err)
		}
		r2.prune(ctx, dc, testCluster, objs)
		after, err := cs.CoreV1().Secrets("kube-system").Get(ctx, bootstraptoken.SecretName(tok), metav1.GetOptions{})
		if err != nil || after.UID != before.UID {
			t.Fatalf("the Secret of the store's current token was deleted by a stale pass (%v)", err)
		}
		if len(r2.Status().Pruned) != 0 {
			t.Errorf("pruned %+v", r2.Status().Pruned)
		}
	})

	t.Run("bootstrap token authenticates a kubelet's CSR", func(t *testing.T) {
		// The authenticator reads Secrets through an informer: allow it to
		// catch up with the latest token.
		eventually(t, 30*time.Second, "a kubelet with the bootstrap token creates its CSR", func() error { return createCSR(tok.String()) })
		wrong := tok
		wrong.Secret = strings.Repeat("x", 16)
		if err := createCSR(wrong.String()); !apierrors.IsUnauthorized(err) {
			t.Errorf("a wrong token secret: %v, want Unauthorized", err)
		}
		if err := createCSR("zzzzzz.0123456789abcdef"); !apierrors.IsUnauthorized(err) {
			t.Errorf("an unknown token: %v, want Unauthorized", err)
		}
	})

	t.Run("the API server refuses a token past its Secret's expiration", func(t *testing.T) {
		// The daemon's clock goes back to the real time, and the store
		// holds a previous token that expires (in real time) within
		// seconds: its Secret is applied with that expiration and stays
		// (the daemon's clock does not pass it), so only the API server's
		// own check can refuse it.
		real := time.Now().UTC().Truncate(time.Second)
		clock.Set(real)
		cur, err := bootstraptoken.Generate()
		if err != nil {
			t.Fatal(err)
		}
		soon, err := bootstraptoken.Generate()
		if err != nil {
			t.Fatal(err)
		}
		ts := bootstraptoken.Tokens{
			Current:  bootstraptoken.Issued{Token: cur, Created: real, Expires: real.Add(24 * time.Hour)},
			Previous: []bootstraptoken.Issued{{Token: soon, Created: real.Add(-24 * time.Hour), Expires: real.Add(4 * time.Second)}},
		}
		b, err := bootstraptoken.Encode(ts)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Put(ctx, bootstraptoken.Key(testCluster), bytes.NewReader(b), store.Condition{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "the expiring token's Secret applied", func() error {
			exp, err := secretExpiration(soon)
			if err == nil && exp != ts.Previous[0].Expires.Format(time.RFC3339) {
				err = fmt.Errorf("expiration %q", exp)
			}
			return err
		})
		eventually(t, 30*time.Second, "the current token authenticates", func() error { return createCSR(cur.String()) })
		time.Sleep(time.Until(ts.Previous[0].Expires.Add(time.Second)))
		if _, err := secretExpiration(soon); err != nil {
			t.Fatalf("the expired token's Secret is gone, so the API server's check is not what refused it: %v", err)
		}
		if err := createCSR(soon.String()); !apierrors.IsUnauthorized(err) {
			t.Errorf("a token past its Secret's expiration: %v, want Unauthorized", err)
		}
	})

	t.Run("API server down later: waits, then applies again", func(t *testing.T) {
		api.Stop()
		eventually(t, 30*time.Second, "not ready reported", func() error {
			if s := d.Status(); s.APIReady || s.Ready {
				return fmt.Errorf("status %+v", s)
			}
			return nil
		})
		api.Start(t)
		eventually(t, 90*time.Second, "ready again", func() error {
			if s := d.Status(); !s.Ready {
				return fmt.Errorf("status %+v", s)
			}
			return nil
		})
	})
}

func managedBy(fields []metav1.ManagedFieldsEntry) bool {
	for _, f := range fields {
		if f.Manager == FieldManager && f.Operation == metav1.ManagedFieldsOperationApply {
			return true
		}
	}
	return false
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// nodeCSR is the certificate request a bootstrapping kubelet sends.
func nodeCSR(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn, Organization: []string{"system:nodes"}}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}
