package manifests

import (
	"bytes"
	"flag"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/kopsnode/agents/pkg/bootstraptoken"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/flagargs"
	"github.com/kopsnode/agents/pkg/store/storeurl"
	"github.com/kopsnode/agents/pkg/testtools"
)

var testToken = bootstraptoken.Issued{
	Token:   bootstraptoken.Token{ID: "abcdef", Secret: "0123456789abcdef"},
	Created: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC),
	Expires: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC),
}

func testInputs() Inputs {
	return Inputs{ClusterDomain: "cluster.local", DNSIP: netip.MustParseAddr("100.64.0.10"), Tokens: []bootstraptoken.Issued{testToken}}
}

func byKey(t *testing.T, objs []Object) map[string]Object {
	t.Helper()
	m := map[string]Object{}
	for _, o := range objs {
		if _, dup := m[o.Key()]; dup {
			t.Fatalf("object %s built twice", o.Key())
		}
		m[o.Key()] = o
	}
	return m
}

func TestObjects(t *testing.T) {
	objs, err := Objects(testInputs())
	if err != nil {
		t.Fatal(err)
	}
	m := byKey(t, objs)
	want := []string{
		"Secret/kube-system/bootstrap-token-abcdef",
		"ClusterRoleBinding/kopsnode:node-bootstrapper",
		"ClusterRoleBinding/kopsnode:node-autoapprove-bootstrap",
		"ClusterRoleBinding/kopsnode:node-autoapprove-certificate-rotation",
		"ClusterRoleBinding/kopsnode:node-proxier",
		"ServiceAccount/kube-system/coredns",
		"ClusterRole/system:coredns",
		"ClusterRoleBinding/system:coredns",
		"ConfigMap/kube-system/coredns",
		"Deployment/kube-system/coredns",
		"Service/kube-system/kube-dns",
	}
	if len(objs) != len(want) {
		t.Errorf("%d objects, want %d", len(objs), len(want))
	}
	for i, k := range want {
		if _, ok := m[k]; !ok {
			t.Errorf("missing %s", k)
		} else if objs[i].Key() != k {
			t.Errorf("object %d is %s, want %s (apply order)", i, objs[i].Key(), k)
		}
	}
	for _, o := range objs {
		meta, _ := metaOf(o.Obj)
		if meta.Labels[ManagedByLabel] != ManagedByValue {
			t.Errorf("%s: label %s = %q", o.Key(), ManagedByLabel, meta.Labels[ManagedByLabel])
		}
		if meta.Annotations[HashAnnotation] != o.Hash || len(o.Hash) != 64 {
			t.Errorf("%s: hash annotation %q, hash %q", o.Key(), meta.Annotations[HashAnnotation], o.Hash)
		}
		if !bytes.Contains(o.JSON, []byte(o.Hash)) {
			t.Errorf("%s: applied JSON lacks the hash", o.Key())
		}
		if _, _, ok := resourceFor(o.Kind); !ok {
			t.Errorf("%s: kind has no resource", o.Key())
		}
	}

	sec := m["Secret/kube-system/bootstrap-token-abcdef"].Obj.(*corev1.Secret)
	if sec.Type != "bootstrap.kubernetes.io/token" {
		t.Errorf("secret type %q", sec.Type)
	}
	for k, v := range map[string]string{"token-id": "abcdef", "token-secret": "0123456789abcdef",
		"usage-bootstrap-authentication": "true", "auth-extra-groups": bootstraptoken.ExtraGroup,
		"expiration": "2026-12-01T12:00:00Z"} {
		if string(sec.Data[k]) != v {
			t.Errorf("secret %s = %q, want %q", k, sec.Data[k], v)
		}
	}

	for name, want := range map[string][2]string{
		"kopsnode:node-bootstrapper":                     {"system:node-bootstrapper", "system:bootstrappers:kopsnode:nodes"},
		"kopsnode:node-autoapprove-bootstrap":            {"system:certificates.k8s.io:certificatesigningrequests:nodeclient", "system:bootstrappers:kopsnode:nodes"},
		"kopsnode:node-autoapprove-certificate-rotation": {"system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", "system:nodes"},
		"kopsnode:node-proxier":                          {"system:node-proxier", "system:nodes"},
	} {
		b := m["ClusterRoleBinding/"+name].Obj.(*rbacv1.ClusterRoleBinding)
		if b.RoleRef.Name != want[0] || len(b.Subjects) != 1 || b.Subjects[0].Kind != "Group" || b.Subjects[0].Name != want[1] {
			t.Errorf("%s binds %s to %+v, want %s to group %s", name, b.RoleRef.Name, b.Subjects, want[0], want[1])
		}
	}

	cm := m["ConfigMap/kube-system/coredns"].Obj.(*corev1.ConfigMap)
	for _, s := range []string{"kubernetes cluster.local in-addr.arpa ip6.arpa", "forward . /etc/resolv.conf", "cache 30", "health", "ready"} {
		if !strings.Contains(cm.Data["Corefile"], s) {
			t.Errorf("Corefile lacks %q:\n%s", s, cm.Data["Corefile"])
		}
	}

	dep := m["Deployment/kube-system/coredns"].Obj.(*appsv1.Deployment)
	if *dep.Spec.Replicas != 2 {
		t.Errorf("replicas %d", *dep.Spec.Replicas)
	}
	c := dep.Spec.Template.Spec.Containers[0]
	if c.Image != CoreDNSImage || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("image %s pull %s", c.Image, c.ImagePullPolicy)
	}
	if p := c.ReadinessProbe.HTTPGet; p == nil || p.Path != "/ready" || p.Port.IntValue() != 8181 {
		t.Errorf("readiness probe %+v", c.ReadinessProbe)
	}
	tolerated := false
	for _, tol := range dep.Spec.Template.Spec.Tolerations {
		if tol.Key == "node-role.kubernetes.io/control-plane" && tol.Effect == corev1.TaintEffectNoSchedule {
			tolerated = true
		}
	}
	if !tolerated {
		t.Errorf("no toleration of the control-plane taint: %+v", dep.Spec.Template.Spec.Tolerations)
	}
	if dep.Spec.Template.Spec.ServiceAccountName != "coredns" {
		t.Errorf("service account %q", dep.Spec.Template.Spec.ServiceAccountName)
	}

	svc := m["Service/kube-system/kube-dns"].Obj.(*corev1.Service)
	if svc.Spec.ClusterIP != "100.64.0.10" || !reflect.DeepEqual(svc.Spec.Selector, dep.Spec.Selector.MatchLabels) {
		t.Errorf("service IP %s selector %v (pods %v)", svc.Spec.ClusterIP, svc.Spec.Selector, dep.Spec.Selector.MatchLabels)
	}
}

// The image nodeup imports from the tarball built by make tools is the one
// the Deployment runs.
func TestCoreDNSImageMatchesBuiltImage(t *testing.T) {
	if CoreDNSImage != testtools.CoreDNSImage {
		t.Errorf("manifests run %s, make tools builds %s", CoreDNSImage, testtools.CoreDNSImage)
	}
}

// Hashes are stable, and change exactly for the objects whose inputs changed.
func TestObjectHashes(t *testing.T) {
	a, _ := Objects(testInputs())
	b, _ := Objects(testInputs())
	for i := range a {
		if a[i].Hash != b[i].Hash || !bytes.Equal(a[i].JSON, b[i].JSON) {
			t.Errorf("%s: not deterministic", a[i].Key())
		}
	}
	in := testInputs()
	in.ClusterDomain = "example.internal"
	c, _ := Objects(in)
	changed := map[string]bool{}
	for i := range a {
		if a[i].Hash != c[i].Hash {
			changed[a[i].Key()] = true
		}
	}
	want := map[string]bool{"ConfigMap/kube-system/coredns": true, "Deployment/kube-system/coredns": true}
	if !reflect.DeepEqual(changed, want) {
		t.Errorf("changing the cluster domain changed %v, want %v", changed, want)
	}
}

// Every valid token gets its Secret (the current one and those a rotation
// left valid); a token of the old format, without expiry, gets none.
func TestObjectsTokenSecrets(t *testing.T) {
	in := testInputs()
	in.Tokens = append(in.Tokens, bootstraptoken.Issued{Token: bootstraptoken.Token{ID: "legacy", Secret: "0123456789abcdef"}})
	objs, err := Objects(in)
	if err != nil {
		t.Fatal(err)
	}
	m := byKey(t, objs)
	if _, ok := m["Secret/kube-system/bootstrap-token-abcdef"]; !ok {
		t.Error("no Secret for the current token")
	}
	legacy, ok := m["Secret/kube-system/bootstrap-token-legacy"]
	if !ok {
		t.Fatal("no Secret for the second token")
	}
	if _, has := legacy.Obj.(*corev1.Secret).Data["expiration"]; has {
		t.Error("a token without expiry got an expiration")
	}
}

func TestObjectsWithoutToken(t *testing.T) {
	in := testInputs()
	in.Tokens = nil
	objs, err := Objects(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.Kind == "Secret" {
			t.Errorf("token Secret built without a token: %s", o.Key())
		}
	}
	if _, err := Objects(Inputs{ClusterDomain: "cluster.local"}); err == nil {
		t.Error("no DNS address accepted")
	}
}

func TestInputsFromNode(t *testing.T) {
	for _, tc := range []struct {
		name          string
		serviceCIDR   string
		clusterDNS    string
		domain        string
		wantIP        string
		wantDomain    string
		wantErrSubstr string
	}{
		{name: "defaults to the tenth service address", serviceCIDR: "100.64.0.0/13", wantIP: "100.64.0.10", wantDomain: "cluster.local"},
		{name: "kubelet clusterDNS wins", serviceCIDR: "10.96.0.0/12", clusterDNS: "10.96.0.53", domain: "k8s.example", wantIP: "10.96.0.53", wantDomain: "k8s.example"},
		{name: "clusterDNS outside the range", serviceCIDR: "10.96.0.0/12", clusterDNS: "192.168.0.10", wantErrSubstr: "node.yaml: spec.kubelet.clusterDNS: 192.168.0.10 is outside networking.serviceCIDR"},
		{name: "bad clusterDNS", serviceCIDR: "10.96.0.0/12", clusterDNS: "nope", wantErrSubstr: "node.yaml: spec.kubelet.clusterDNS"},
		{name: "bad service range", serviceCIDR: "nope", wantErrSubstr: "node.yaml: spec.networking.serviceCIDR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := &config.NodeConfig{Spec: config.NodeConfigSpec{
				Networking: config.NetworkingSpec{ServiceCIDR: tc.serviceCIDR},
				Kubelet:    config.KubeletSpec{ClusterDNS: tc.clusterDNS, ClusterDomain: tc.domain},
			}}
			in, err := InputsFromNode(node, "node.yaml")
			if tc.wantErrSubstr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrSubstr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErrSubstr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if in.DNSIP.String() != tc.wantIP || in.ClusterDomain != tc.wantDomain {
				t.Errorf("got %s %s, want %s %s", in.DNSIP, in.ClusterDomain, tc.wantIP, tc.wantDomain)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	c.Interval = 0
	c.Kubeconfig = ""
	c.BootstrapTokenTTL = time.Minute
	err := c.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, f := range []string{"--config", "--store", "--kubeconfig", "--interval", "--bootstrap-token-ttl"} {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error does not name %s: %v", f, err)
		}
	}
}

// Args is the inverse of AddFlags: parsing the rendered flags gives the
// same configuration.
func TestConfigArgsRoundTrip(t *testing.T) {
	for _, c := range []Config{
		func() Config {
			c := DefaultConfig()
			c.ConfigFile, c.Store.URL = "/etc/nodeup/x.yaml", "s3://b/p"
			return c
		}(),
		func() Config {
			c := DefaultConfig()
			c.ConfigFile, c.Store, c.Kubeconfig = "/c", storeurl.Settings{URL: "s3://b/p", Endpoint: "http://127.0.0.1:9000", Region: "eu-west-1", PathStyle: true}, "/k"
			c.Interval, c.WaitInterval, c.StatusListen = 5*time.Second, time.Second, ""
			c.BootstrapTokenTTL = 6 * time.Hour
			c.Log.Format, c.Log.Level = "json", "debug"
			return c
		}(),
	} {
		got := DefaultConfig()
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		got.AddFlags(fs)
		if err := fs.Parse(c.Args()); err != nil {
			t.Fatalf("%v: %v", c.Args(), err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("Args %v parse to\n%+v, want\n%+v", c.Args(), got, c)
		}
		if u := flagargs.Unset(fs); c.Log.Format == "json" && len(u) > 0 {
			t.Errorf("Args of a full configuration does not render %q", u)
		}
		if err := got.Validate(); err != nil {
			t.Errorf("rendered flags invalid: %v", err)
		}
	}
}

func TestNextDelay(t *testing.T) {
	cfg := Config{Interval: time.Minute, WaitInterval: 2 * time.Second}
	for failures, want := range []time.Duration{time.Minute, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute} {
		if got := nextDelay(cfg, failures); got != want {
			t.Errorf("after %d failures: %s, want %s", failures, got, want)
		}
	}
}

func TestPrintStatus(t *testing.T) {
	st := Status{
		Cluster: "c1", APIServer: "https://127.0.0.1:443", APIReady: true, Passes: 3,
		InputErrors: []string{"node bootstrap token: not found"},
		Objects: []ObjectStatus{
			{Kind: "Service", Namespace: "kube-system", Name: "kube-dns", Hash: strings.Repeat("a", 64), Result: ResultRecreated, Changes: 2, LastChanged: time.Unix(0, 0).UTC()},
			{Kind: "ClusterRole", Name: "system:coredns", Hash: strings.Repeat("b", 64), Result: ResultError, Error: "forbidden"},
		},
		Pruned: []PrunedObject{{Kind: "Secret", Namespace: "kube-system", Name: "bootstrap-token-old", At: time.Unix(0, 0).UTC()}},
	}
	var b bytes.Buffer
	if err := PrintStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"cluster c1: not ready", "https://127.0.0.1:443 ready", "Service/kube-system/kube-dns", "recreated",
		"aaaaaaaaaaaa", "ClusterRole/system:coredns", "forbidden", "token: not found", "Secret/kube-system/bootstrap-token-old"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("status lacks %q:\n%s", s, b.String())
		}
	}
}
