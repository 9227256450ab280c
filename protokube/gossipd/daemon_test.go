package gossipd

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/kopsnode/agents/gossip/membership"
	"github.com/kopsnode/agents/pkg/cli"
	"github.com/kopsnode/agents/pkg/store/file"
)

// startLoopbackDaemon runs a daemon on 127.0.0.1 with store seeds.
func startLoopbackDaemon(t *testing.T, storeDir, name string) (*Daemon, string) {
	t.Helper()
	st, err := file.New(storeDir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hostsPath := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(hostsPath, []byte("127.0.0.1 localhost\n"), 0o644)
	cfg := DefaultConfig()
	cfg.Cluster = "loop.k8s.local"
	cfg.Store.URL = "file://" + storeDir
	cfg.NodeName = name
	cfg.Bind = "127.0.0.1:0"
	cfg.Seeds = "store"
	cfg.DNSListen = "127.0.0.1:0"
	cfg.StatusAddr = "127.0.0.1:0"
	cfg.HostsFile = hostsPath
	cfg.Publish = []string{"api=127.0.0.10", "self-api=self"}
	cfg.LeaveGrace = time.Second
	cfg.Fast = true
	d, err := Start(context.Background(), cfg, Deps{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, hostsPath
}

func TestDaemonWithStoreSeedsServesDNSHostsAndStatus(t *testing.T) {
	storeDir := t.TempDir()
	st, _ := file.New(storeDir, file.Options{})
	if err := membership.WriteKeys(context.Background(), st, membership.KeysObject("loop.k8s.local"), membership.KeySet{Primary: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}); err != nil {
		t.Fatal(err)
	}
	a, _ := startLoopbackDaemon(t, storeDir, "a")
	b, hostsB := startLoopbackDaemon(t, storeDir, "b") // finds a through the store registry
	zone := "internal.loop.k8s.local."

	deadline := time.Now().Add(20 * time.Second)
	for {
		m := new(dns.Msg)
		m.SetQuestion("a."+zone, dns.TypeA)
		r, _, err := new(dns.Client).Exchange(m, b.DNSAddr())
		if err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b's DNS does not answer for a: %v %v", r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	m := new(dns.Msg)
	m.SetQuestion("api."+zone, dns.TypeA)
	r, _, err := new(dns.Client).Exchange(m, a.DNSAddr())
	if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.10" {
		t.Fatalf("published api name: %v %v", r, err)
	}
	// "self" publishes the node's own advertise address.
	m = new(dns.Msg)
	m.SetQuestion("self-api."+zone, dns.TypeA)
	r, _, err = new(dns.Client).Exchange(m, a.DNSAddr())
	if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.1" {
		t.Fatalf("name published with address self: %v %v", r, err)
	}
	for {
		got, _ := os.ReadFile(hostsB)
		if strings.HasPrefix(string(got), "127.0.0.1 localhost\n") && strings.Contains(string(got), "a.internal.loop.k8s.local") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b's hosts file:\n%s", got)
		}
		time.Sleep(50 * time.Millisecond)
	}

	app := &cli.App{Name: "protokube", Commands: []*cli.Command{StatusCommand()}}
	var out, errb bytes.Buffer
	if code := app.Run(context.Background(), &cli.Env{Stdout: &out, Stderr: &errb}, []string{"status", "-address", b.StatusAddr(), "-o", "json"}); code != 0 {
		t.Fatalf("status -o json exited %d: %s", code, errb.String())
	}
	var st2 Status
	if err := json.Unmarshal(out.Bytes(), &st2); err != nil {
		t.Fatalf("status -o json is not JSON: %v\n%s", err, out.String())
	}
	if st2.Node != "b" || memberState(st2, "a") != "alive" || memberState(st2, "b") != "alive" {
		t.Fatalf("status document: %+v", st2)
	}
	if r, ok := findRecord(st2, "a", "dns/api."+zone); !ok || r.Value != "127.0.0.10" || r.Version.IsZero() {
		t.Fatalf("status lacks a's api record with its version: %+v", st2.Records)
	}
	out.Reset()
	if code := app.Run(context.Background(), &cli.Env{Stdout: &out, Stderr: &errb}, []string{"status", "-address", b.StatusAddr()}); code != 0 {
		t.Fatalf("status exited %d: %s", code, errb.String())
	}
	for _, want := range []string{"MEMBERS (2 alive, 0 dead)", "dns/api." + zone, "127.0.0.10"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("human status lacks %q:\n%s", want, out.String())
		}
	}
	errb.Reset()
	if code := app.Run(context.Background(), &cli.Env{Stdout: &out, Stderr: &errb}, []string{"status", "-address", "127.0.0.1:1"}); code != 1 || !strings.Contains(errb.String(), "127.0.0.1:1") {
		t.Fatalf("status of an absent daemon: exit %d, %q", code, errb.String())
	}
}

func TestConfigValidateNamesFlags(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Seeds = "static"
	cfg.Bind = "nope"
	cfg.Publish = []string{"api=not-ip"}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{"--cluster", "--store", "--bind", "--static-seed", "--publish[0]"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
}
