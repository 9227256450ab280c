package app

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/pkg/cli"
	"github.com/kopsnode/agents/pkg/testtools"
)

const version = "3.6.16"

func run(t *testing.T, a *cli.App, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := a.Run(context.Background(), &cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader("")}, args)
	return out.String(), errb.String(), code
}

func TestCtlSpec(t *testing.T) {
	storeURL := "file://" + t.TempDir()
	common := []string{"--store", storeURL, "--cluster-name", "c.example"}
	ctl := EtcdManagerCtl()
	if _, errs, code := run(t, ctl, append([]string{"get-spec"}, common...)...); code != 1 || !strings.Contains(errs, "no etcd cluster spec") {
		t.Fatalf("get-spec on empty store: code %d, %q", code, errs)
	}
	if _, errs, code := run(t, ctl, append([]string{"set-spec", "--members", "4", "--version", version}, common...)...); code != 2 || !strings.Contains(errs, "memberCount: 4 is not one of 1, 3, 5") {
		t.Fatalf("set-spec 4 members: code %d, %q", code, errs)
	}
	if _, errs, code := run(t, ctl, append([]string{"set-spec", "--members", "3", "--version", "v3"}, common...)...); code != 2 || !strings.Contains(errs, "etcdVersion") {
		t.Fatalf("set-spec bad version: code %d, %q", code, errs)
	}
	if out, errs, code := run(t, ctl, append([]string{"set-spec", "--members", "3", "--version", version}, common...)...); code != 0 || !strings.Contains(out, "3 members, etcd "+version) {
		t.Fatalf("set-spec: code %d, %q %q", code, out, errs)
	}
	// Change only the count.
	if _, errs, code := run(t, ctl, append([]string{"set-spec", "--members", "5"}, common...)...); code != 0 {
		t.Fatalf("set-spec --members 5: %d %q", code, errs)
	}
	out, errs, code := run(t, ctl, append([]string{"get-spec", "-o", "json"}, common...)...)
	if code != 0 {
		t.Fatalf("get-spec: %d %q", code, errs)
	}
	var spec struct {
		MemberCount int    `json:"memberCount"`
		EtcdVersion string `json:"etcdVersion"`
	}
	if err := json.Unmarshal([]byte(out), &spec); err != nil || spec.MemberCount != 5 || spec.EtcdVersion != version {
		t.Fatalf("get-spec -o json = %q (%v)", out, err)
	}
	if out, errs, code := run(t, ctl, append([]string{"queue-command", "--kind", "backup", "--id", "0001", "--arg", "note=x"}, common...)...); code != 0 || !strings.Contains(out, "queued command 0001") {
		t.Fatalf("queue-command: %d %q %q", code, out, errs)
	}
	if _, errs, code := run(t, ctl, append([]string{"queue-command", "--kind", "backup", "--id", "0001"}, common...)...); code != 1 || !strings.Contains(errs, "0001") {
		t.Fatalf("queue-command with a used id: %d %q", code, errs)
	}
	out, errs, code = run(t, ctl, append([]string{"status"}, common...)...)
	if code != 0 || !strings.Contains(out, "5 members") || !strings.Contains(out, "not created yet") || !strings.Contains(out, "leader:") || !strings.Contains(out, "0001") {
		t.Fatalf("status: %d %q %q", code, out, errs)
	}
}

// TestRunAndStatus runs the real `etcd-manager run` command in-process (one
// member, static discovery, the spec seeded from its flags as nodeup passes
// them, etcd also serving on a second local address), then `etcd-manager
// status`, /metrics and `etcd-manager-ctl status` against it.
func TestRunAndStatus(t *testing.T) {
	testtools.EtcdBinDir(t, version)
	dir := t.TempDir()
	storeURL := "file://" + filepath.Join(dir, "store")
	ctl := EtcdManagerCtl()
	// The file store's root must exist; no spec is written: the seed flags
	// provide it.
	if err := os.MkdirAll(filepath.Join(dir, "store"), 0o755); err != nil {
		t.Fatal(err)
	}
	metrics := "127.44.14.2:13991"
	apiDir := filepath.Join(dir, "kube-apiserver", "etcd-main")
	ctx, cancel := context.WithCancel(context.Background())
	var logs bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- EtcdManager().Run(ctx, &cli.Env{Stdout: io.Discard, Stderr: &syncBuffer{b: &logs}}, []string{"run",
			"--cluster-name", "c.example", "--id", "a", "--data-dir", filepath.Join(dir, "data"),
			"--etcd-bin-dir-root", testtools.EtcdVersionsDir(), "--address", "127.44.14.2",
			"--peer-port", "12380", "--client-port", "14001", "--manager-port", "13994",
			"--store", storeURL, "--discovery", "static", "--peers", "a=127.44.14.2:13994",
			"--tick", "500ms", "--lease-duration", "2s", "--peer-timeout", "1s", "--metrics-addr", metrics, "--etcd-log-level", "warn",
			"--hosts-file", filepath.Join(dir, "hosts"),
			"--apiserver-client-cert-dir", apiDir,
			"--seed-members", "1", "--seed-etcd-version", version,
			// Not 127.0.0.1: tests of other packages may use its port.
			"--local-client-address", "127.44.14.3",
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("etcd-manager run did not stop")
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	apiSerial := ""
	for {
		o, _, code := run(t, EtcdManager(), "status", "--addr", metrics, "-o", "json")
		var st struct {
			IsLeader bool `json:"isLeader"`
			Members  []struct {
				Name    string `json:"name"`
				Healthy bool   `json:"healthy"`
			} `json:"members"`
			APIServer struct {
				Dir    string `json:"dir"`
				Serial string `json:"serial"`
			} `json:"apiserverClientCert"`
		}
		if code == 0 && json.Unmarshal([]byte(o), &st) == nil && st.IsLeader && len(st.Members) == 1 && st.Members[0].Healthy && st.Members[0].Name == "a" &&
			st.APIServer.Dir == apiDir && st.APIServer.Serial != "" {
			apiSerial = st.APIServer.Serial
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed a healthy leader with one member; last %q\nlogs:\n%s", o, logs.String())
		}
		time.Sleep(300 * time.Millisecond)
	}
	text, errs, code := run(t, EtcdManager(), "status", "--addr", metrics)
	if code != 0 || !strings.Contains(text, "instance:") || !strings.Contains(text, "a (leader)") || !strings.Contains(text, "MEMBERS") ||
		!strings.Contains(text, "apiserver client cert:  "+apiDir+": kube-apiserver-etcd-client, serial "+apiSerial+", expires ") {
		t.Fatalf("status text: %d %q %q", code, text, errs)
	}
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`etcd_manager_is_leader{etcd_cluster="main"} 1`,
		`etcd_manager_members{etcd_cluster="main"} 1`,
		`etcd_manager_healthy_members{etcd_cluster="main"} 1`,
		fmt.Sprintf(`etcd_manager_etcd_version_info{etcd_cluster="main",version="%s"} 1`, version),
		`etcd_manager_seconds_since_last_reconcile{etcd_cluster="main"}`,
		`etcd_manager_apiserver_client_cert_expiry_timestamp_seconds{etcd_cluster="main"} `,
	} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	resp, err = http.Get("http://" + metrics + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/healthz: %s", resp.Status)
	}
	ctlOut, errs, code := run(t, ctl, "status", "--store", storeURL, "--cluster-name", "c.example")
	if code != 0 || !strings.Contains(ctlOut, "leader:  a (term 1") && !strings.Contains(ctlOut, "a (term 1") {
		t.Fatalf("ctl status: %d %q %q", code, ctlOut, errs)
	}
	for _, name := range []string{"etcd-client.crt", "etcd-client.key", "etcd-ca.crt"} {
		if _, err := os.Stat(filepath.Join(apiDir, name)); err != nil {
			t.Errorf("--apiserver-client-cert-dir: %v", err)
		}
	}
	if out, errs, code := run(t, ctl, "get-spec", "--store", storeURL, "--cluster-name", "c.example", "-o", "json"); code != 0 || !strings.Contains(out, `"memberCount": 1`) || !strings.Contains(out, `"etcdVersion": "`+version+`"`) {
		t.Errorf("the spec seeded from the flags: %d %q %q", code, out, errs)
	}
	// etcd answers on --local-client-address with the API server's files.
	if err := etcdHealth("https://127.44.14.3:14001", apiDir); err != nil {
		t.Errorf("etcd on --local-client-address: %v", err)
	}
	hosts, _ := readFile(filepath.Join(dir, "hosts"))
	if !strings.Contains(hosts, "127.44.14.2\tetcd-a.internal.c.example") {
		t.Errorf("hosts file: %q", hosts)
	}
	// An unreachable status address is a clear error.
	if _, errs, code := run(t, EtcdManager(), "status", "--addr", "127.44.14.2:1"); code != 1 || !strings.Contains(errs, "127.44.14.2:1") {
		t.Errorf("status of nothing: %d %q", code, errs)
	}
}

// etcdHealth GETs /health of an etcd client URL with the API server's
// files from dir.
func etcdHealth(url, dir string) error {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "etcd-client.crt"), filepath.Join(dir, "etcd-client.key"))
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "etcd-ca.crt"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	resp, err := c.Get(url + "/health")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"health":"true"`) {
		return fmt.Errorf("%s/health: %s %s", url, resp.Status, body)
	}
	return nil
}
