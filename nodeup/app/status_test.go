package app

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/nodeup/fsroot"
	"github.com/kopsnode/agents/nodeup/kuberender"
	"github.com/kopsnode/agents/nodeup/model"
	"github.com/kopsnode/agents/nodeup/nodecheck"
)

// TestCLIStatusReportsNodeChecks: status reads the kubeconfigs from the
// model's paths under --root and reports every check, unknown where it
// cannot tell, without failing; the run's fields stay at the top level.
func TestCLIStatusReportsNodeChecks(t *testing.T) {
	root := t.TempDir()
	f, err := fsroot.New(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteStatus(f, &Status{Version: "v0", Result: "converged", Store: "s3://bucket/state", Cluster: "c.k8s.local", Group: "nodes"}); err != nil {
		t.Fatal(err)
	}
	// An API server address where nothing listens.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := "https://" + ln.Addr().String()
	ln.Close()
	kc, err := kuberender.Kubeconfig(kuberender.KubeconfigSpec{Server: server, CAPEM: []byte("not a CA"), User: "kubelet-bootstrap",
		Credentials: kuberender.Credentials{Token: "abcdef.0123456789abcdef"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.WriteFile(model.KubeletBootstrapKubeconfig, kc, 0o600, fsroot.RootOwner); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	start := time.Now()
	if code := NewApp(fileOpener).Run(context.Background(), cliEnv(&out), []string{"status", "--root", root, "-o", "json"}); code != 0 {
		t.Fatalf("status exit %d:\n%s", code, out.String())
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("status took %s", d)
	}
	var rep struct {
		Result string           `json:"result"`
		Group  string           `json:"group"`
		Checks nodecheck.Report `json:"checks"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v:\n%s", err, out.String())
	}
	if rep.Result != "converged" || rep.Group != "nodes" {
		t.Errorf("run fields: %+v", rep)
	}
	c := rep.Checks
	if len(c.Units) != 2 || c.Units[0].Name != "containerd.service" || c.Units[1].Name != "kubelet.service" || !strings.Contains(c.Units[1].Unknown, "--root") {
		t.Errorf("units %+v", c.Units)
	}
	if c.API.Server != server || c.API.From != model.KubeletBootstrapKubeconfig || !c.API.Resolves || c.API.Answers {
		t.Errorf("api %+v", c.API)
	}
	if c.Certificate.Issued || !strings.Contains(c.Certificate.Unknown, "does not answer") {
		t.Errorf("certificate %+v", c.Certificate)
	}
	if c.Node.Unknown == "" {
		t.Errorf("node %+v", c.Node)
	}

	out.Reset()
	NewApp(fileOpener).Run(context.Background(), cliEnv(&out), []string{"status", "--root", root})
	for _, want := range []string{"nodeup v0: converged", "kubelet      unknown: not read: --root", "api          " + server + " (from " + model.KubeletBootstrapKubeconfig + ")", "answers    no:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("human status does not say %q:\n%s", want, out.String())
		}
	}
}

func TestHumanChecks(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	since := now.Add(-90 * time.Second)
	notJoined := &nodecheck.Report{
		Units: []nodecheck.Unit{
			{Name: "containerd.service", LoadState: "loaded", ActiveState: "active", SubState: "running", Result: "success", Since: since},
			{Name: "kubelet.service", LoadState: "loaded", ActiveState: "activating", SubState: "auto-restart", Result: "exit-code", Since: since},
		},
		API: nodecheck.API{Server: "https://api.internal.c", From: model.KubeletBootstrapKubeconfig, Host: "api.internal.c", Resolves: true,
			Addresses: []string{"10.0.0.1"}, Answers: true, Ready: true, Readyz: "200 OK: ok"},
		Certificate: nodecheck.Certificate{BootstrapToken: &nodecheck.Token{ID: "abcdef"}, CSRs: []nodecheck.CSR{
			{Name: "node-csr-x", Created: since, Requestor: "system:bootstrap:abcdef", State: nodecheck.CSRDenied, Reason: "NotOurs", Message: "unknown machine"}}},
		Node: nodecheck.Node{Unknown: "not read: the kubelet has no client certificate yet"},
	}
	var b bytes.Buffer
	humanChecks(&b, notJoined, now)
	for _, want := range []string{
		"containerd   active (running) since 2026-11-30T11:58:30Z (1m30s ago)",
		"kubelet      activating (auto-restart), last result exit-code since",
		"resolves   api.internal.c -> 10.0.0.1",
		"answers    yes, /readyz 200 OK: ok",
		"certificate  not issued yet",
		"csr        node-csr-x denied, created 2026-11-30T11:58:30Z by system:bootstrap:abcdef: NotOurs unknown machine",
		"node Ready   unknown: not read: the kubelet has no client certificate yet",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("does not say %q:\n%s", want, b.String())
		}
	}

	rejected := &nodecheck.Report{
		API: nodecheck.API{Server: "https://api.internal.c", Host: "api.internal.c", Error: "resolving api.internal.c: no such host"},
		Certificate: nodecheck.Certificate{BootstrapToken: &nodecheck.Token{ID: "abcdef", Rejected: true},
			Error: "the API server rejected bootstrap token abcdef (401 Unauthorized)"},
		Node: nodecheck.Node{Name: "n1", Ready: "False", Reason: "KubeletNotReady", Message: "cni not ready", LastTransition: since},
	}
	b.Reset()
	humanChecks(&b, rejected, now)
	for _, want := range []string{
		"resolves   no: resolving api.internal.c: no such host",
		"certificate  not issued: the API server rejected bootstrap token abcdef (401 Unauthorized)",
		"node Ready   False (Node n1, since 2026-11-30T11:58:30Z (1m30s ago)): KubeletNotReady cni not ready",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("does not say %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "answers") {
		t.Errorf("a name that does not resolve has no answer line:\n%s", b.String())
	}
}
