package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	units "github.com/kopsnode/agents/systemd-units"
)

type binServer struct {
	*httptest.Server
	hits atomic.Int64
}

func serveBinary(t *testing.T, body []byte) *binServer {
	s := &binServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

// deadURL is a loopback address nothing listens on.
func deadURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/nodeup"
}

type scriptRun struct {
	root, log string
	out       string
	err       error
}

// runScript runs the rendered script under sh with systemctl replaced by a
// recording stub and NODEUP_ROOT pointing at a temp dir.
func runScript(t *testing.T, script, root string, fetcher string) scriptRun {
	t.Helper()
	bin := t.TempDir()
	log := filepath.Join(bin, "systemctl.log")
	stub := "#!/bin/sh\necho \"$*\" >> " + log + "\n"
	if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte(stub), 0o755); err != nil {
		t.Fatal(err)
	}
	path := bin + ":/usr/bin:/bin"
	if fetcher != "" {
		// Only one of curl/wget visible, plus what the script needs.
		only := t.TempDir()
		for _, tool := range []string{fetcher, "sha256sum", "cut", "mkdir", "dirname", "cat", "chmod", "mv", "rm", "sleep"} {
			p, err := exec.LookPath(tool)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(p, filepath.Join(only, tool)); err != nil {
				t.Fatal(err)
			}
		}
		path = bin + ":" + only
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", script)
	cmd.Env = []string{"PATH=" + path, "NODEUP_ROOT=" + root, "HOME=" + root}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	calls, _ := os.ReadFile(log)
	return scriptRun{root: root, log: string(calls), out: out.String(), err: err}
}

func render(t *testing.T, sha string, urls ...string) string {
	t.Helper()
	s, err := RenderBootstrapScript(BootstrapOptions{
		NodeupURLs: urls, NodeupSHA256: sha, Attempts: 1, RetryDelay: 1, ConnectTimeout: 2, MaxTime: 10,
		Boot: BootConfig{Store: "s3://bucket/prefix", Cluster: "c.k8s.local", Group: "nodes", ConfigHash: strings.Repeat("a", 64), StoreEndpoint: "http://127.0.0.1:9000", StorePathStyle: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestBootstrapScript(t *testing.T) {
	binary := []byte("#!/bin/sh\necho fake nodeup\n")
	sum := sha256.Sum256(binary)
	sha := hex.EncodeToString(sum[:])
	good := serveBinary(t, binary)
	corrupt := serveBinary(t, append([]byte("evil"), binary...))

	check := func(t *testing.T, r scriptRun) {
		t.Helper()
		if r.err != nil {
			t.Fatalf("script failed: %v\n%s", r.err, r.out)
		}
		b, err := os.ReadFile(filepath.Join(r.root, "usr/local/bin/nodeup"))
		if err != nil || !bytes.Equal(b, binary) {
			t.Fatalf("nodeup binary = %q, %v\n%s", b, err, r.out)
		}
		fi, _ := os.Stat(filepath.Join(r.root, "usr/local/bin/nodeup"))
		if fi.Mode().Perm() != 0o755 {
			t.Fatalf("mode %v", fi.Mode())
		}
		bc, err := LoadBootConfig(filepath.Join(r.root, "etc/nodeup/boot.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if bc.Store != "s3://bucket/prefix" || bc.Group != "nodes" || bc.ConfigHash != strings.Repeat("a", 64) || bc.StoreEndpoint != "http://127.0.0.1:9000" || !bc.StorePathStyle {
			t.Fatalf("boot config %+v", bc)
		}
		unit, err := os.ReadFile(filepath.Join(r.root, "etc/systemd/system/nodeup.service"))
		if err != nil || string(unit) != units.Nodeup("/etc/nodeup/boot.yaml").Render() {
			t.Fatalf("unit = %q, %v", unit, err)
		}
		if r.log != "daemon-reload\nenable nodeup.service\nstart --no-block nodeup.service\n" {
			t.Fatalf("systemctl calls:\n%s", r.log)
		}
		left, _ := filepath.Glob(filepath.Join(r.root, "usr/local/bin/*.download.*"))
		if len(left) > 0 {
			t.Fatalf("temporary files left: %v", left)
		}
	}

	t.Run("good binary with curl", func(t *testing.T) {
		check(t, runScript(t, render(t, sha, good.URL+"/nodeup"), t.TempDir(), "curl"))
	})
	t.Run("good binary with wget", func(t *testing.T) {
		check(t, runScript(t, render(t, sha, good.URL+"/nodeup"), t.TempDir(), "wget"))
	})
	t.Run("corrupt first mirror is rejected", func(t *testing.T) {
		r := runScript(t, render(t, sha, corrupt.URL+"/nodeup", good.URL+"/nodeup"), t.TempDir(), "")
		check(t, r)
		if !strings.Contains(r.out, "sha256 mismatch for "+corrupt.URL+"/nodeup: expected "+sha) {
			t.Fatalf("no mismatch message:\n%s", r.out)
		}
	})
	t.Run("dead first mirror", func(t *testing.T) {
		r := runScript(t, render(t, sha, deadURL(t), good.URL+"/nodeup"), t.TempDir(), "")
		check(t, r)
	})
	t.Run("already downloaded binary is reused", func(t *testing.T) {
		root := t.TempDir()
		os.MkdirAll(filepath.Join(root, "usr/local/bin"), 0o755)
		os.WriteFile(filepath.Join(root, "usr/local/bin/nodeup"), binary, 0o755)
		before := good.hits.Load()
		r := runScript(t, render(t, sha, good.URL+"/nodeup"), root, "")
		check(t, r)
		if good.hits.Load() != before {
			t.Fatal("downloaded again")
		}
	})
	t.Run("every mirror bad fails and installs nothing", func(t *testing.T) {
		root := t.TempDir()
		r := runScript(t, render(t, sha, corrupt.URL+"/nodeup", deadURL(t)), root, "")
		if r.err == nil {
			t.Fatalf("script succeeded:\n%s", r.out)
		}
		if _, err := os.Stat(filepath.Join(root, "usr/local/bin/nodeup")); err == nil {
			t.Fatal("bad binary installed")
		}
		if r.log != "" {
			t.Fatalf("systemctl called: %s", r.log)
		}
	})
}

func TestBootstrapOptionsValidation(t *testing.T) {
	_, err := RenderBootstrapScript(BootstrapOptions{NodeupURLs: []string{"ftp://x", "http://a b"}, NodeupSHA256: "zz"})
	for _, want := range []string{"ftp://x", "http://a b", "--nodeup-sha256", "--store", "--cluster", "--group"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want %q", err, want)
		}
	}
}
