package tasks

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/fsroot"
	"github.com/kopsnode/agents/nodeup/internal/nodeuptest"
	"github.com/kopsnode/agents/nodeup/state"
	"github.com/kopsnode/agents/pkg/testtools"
)

func env(t *testing.T, root string) (*engine.Env, *nodeuptest.Runner) {
	t.Helper()
	f, err := fsroot.New(root)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := state.Load(f)
	r := &nodeuptest.Runner{}
	return &engine.Env{FS: f, State: st, Exec: r, HTTP: DefaultHTTPClient(), Log: nil, Changed: func(string) bool { return false }, AttemptTimeout: 5 * time.Second}, r
}

// converge runs Find/Apply until Find says converged, at most twice.
func converge(t *testing.T, e *engine.Env, tk engine.Task) engine.Diff {
	t.Helper()
	if e.Log == nil {
		e.Log = discard()
	}
	d, err := tk.Find(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	if d == nil {
		return nil
	}
	if err := tk.Apply(context.Background(), e, d); err != nil {
		t.Fatal(err)
	}
	d2, err := tk.Find(context.Background(), e)
	if err != nil || d2 != nil {
		t.Fatalf("not converged after apply: %v %v", d2, err)
	}
	return d
}

func TestFileModeOwnerAndContent(t *testing.T) {
	root := t.TempDir()
	e, _ := env(t, root)
	f := &File{Path: "/etc/a.conf", Content: []byte("a\nb\n"), Mode: 0o600, Owner: fsroot.Owner{UID: 0, GID: 0}}
	if d := converge(t, e, f); !d.(*FileDiff).Create {
		t.Fatal("expected create")
	}
	os.Chmod(filepath.Join(root, "etc/a.conf"), 0o644)
	d := converge(t, e, f).(*FileDiff)
	if d.ContentChanged || d.OldMode != 0o644 {
		t.Fatalf("diff %+v", d)
	}
	f.Content = []byte("a\nc\n")
	var b strings.Builder
	converge(t, e, f).Render(&b)
	if !strings.Contains(b.String(), "-b\n+c\n") {
		t.Fatalf("render:\n%s", b.String())
	}
}

func TestDirectoryAndSymlink(t *testing.T) {
	root := t.TempDir()
	e, _ := env(t, root)
	converge(t, e, &Directory{Path: "/var/lib/x", Mode: 0o700, Owner: fsroot.RootOwner})
	fi, _ := os.Stat(filepath.Join(root, "var/lib/x"))
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatal(fi.Mode())
	}
	converge(t, e, &Symlink{Path: "/usr/bin/k", Target: "/usr/local/bin/k"})
	converge(t, e, &Symlink{Path: "/usr/bin/k", Target: "/opt/k"})
	if l, _ := os.Readlink(filepath.Join(root, "usr/bin/k")); l != "/opt/k" {
		t.Fatal(l)
	}
}

func TestManagedBlockLeavesTheRestAlone(t *testing.T) {
	root := t.TempDir()
	e, _ := env(t, root)
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	hosts := "127.0.0.1 localhost\n# BEGIN other\n10.0.0.1 x\n# END other\n"
	os.WriteFile(filepath.Join(root, "etc/hosts"), []byte(hosts), 0o644)
	b := &ManagedBlock{Path: "/etc/hosts", Name: "api", Content: "10.0.0.2 api.internal\n"}
	converge(t, e, b)
	got, _ := os.ReadFile(filepath.Join(root, "etc/hosts"))
	want := hosts + "# BEGIN nodeup api\n10.0.0.2 api.internal\n# END nodeup api\n"
	if string(got) != want {
		t.Fatalf("hosts:\n%s", got)
	}
	// Someone appends after the block; we change the block only.
	os.WriteFile(filepath.Join(root, "etc/hosts"), append(got, []byte("1.2.3.4 later\n")...), 0o644)
	b.Content = "10.0.0.3 api.internal"
	converge(t, e, b)
	got, _ = os.ReadFile(filepath.Join(root, "etc/hosts"))
	want = hosts + "# BEGIN nodeup api\n10.0.0.3 api.internal\n# END nodeup api\n1.2.3.4 later\n"
	if string(got) != want {
		t.Fatalf("hosts:\n%s", got)
	}
	os.WriteFile(filepath.Join(root, "etc/hosts"), []byte("# BEGIN nodeup api\nhalf\n"), 0o644)
	if _, err := b.Find(context.Background(), e); err == nil || !strings.Contains(err.Error(), "no matching") {
		t.Fatalf("unterminated block: %v", err)
	}
}

func TestAssetExtractAndInstall(t *testing.T) {
	root := t.TempDir()
	e, _ := env(t, root)
	data := testtools.TarGz(t, map[string]string{"bin/tool": "#!/bin/sh\n", "./other": "x"})
	srv := nodeuptest.NewServer(t, []nodeuptest.Asset{{Name: "a.tgz", Data: data}})
	a := &Asset{Name: "tool", SHA256: nodeuptest.Asset{Data: data}.SHA256(), URLs: []string{srv.URL + "/a.tgz"}, Extract: true}
	var b strings.Builder
	d, _ := a.Find(context.Background(), e)
	d.Render(&b)
	if !strings.Contains(b.String(), "download "+srv.URL+"/a.tgz -> /var/cache/nodeup/assets/") || !strings.Contains(b.String(), "extract") {
		t.Fatalf("plan %s", b.String())
	}
	converge(t, e, a)
	in := &Install{Path: "/usr/local/bin/tool", Asset: a, Member: "bin/tool", Mode: 0o755}
	converge(t, e, in)
	got, _ := os.ReadFile(filepath.Join(root, "usr/local/bin/tool"))
	if string(got) != "#!/bin/sh\n" {
		t.Fatalf("%q", got)
	}
	// No temporary directories remain in the cache.
	ents, _ := os.ReadDir(filepath.Join(root, CacheDir))
	for _, en := range ents {
		if strings.Contains(en.Name(), ".nodeup-") {
			t.Fatalf("left %s", en.Name())
		}
	}
	// A binary changed on disk is put back.
	os.WriteFile(filepath.Join(root, "usr/local/bin/tool"), []byte("tampered"), 0o755)
	converge(t, e, in)
}

func TestAssetMismatchTriesNextMirrorAndReportsHashes(t *testing.T) {
	root := t.TempDir()
	e, _ := env(t, root)
	good := []byte("good bytes")
	bad := nodeuptest.NewServer(t, []nodeuptest.Asset{{Name: "x", Data: []byte("bad bytes")}})
	ok := nodeuptest.NewServer(t, []nodeuptest.Asset{{Name: "x", Data: good}})
	sha := nodeuptest.Asset{Data: good}.SHA256()
	a := &Asset{Name: "x", SHA256: sha, URLs: []string{bad.URL + "/x", ok.URL + "/x"}}
	converge(t, e, a)
	got, _ := os.ReadFile(filepath.Join(root, CacheDir, sha))
	if string(got) != "good bytes" {
		t.Fatal(string(got))
	}

	root2 := t.TempDir()
	e2, _ := env(t, root2)
	e2.Log = discard()
	a2 := &Asset{Name: "x", SHA256: sha, URLs: []string{bad.URL + "/x"}}
	d, _ := a2.Find(context.Background(), e2)
	err := a2.Apply(context.Background(), e2, d)
	var hm *HashMismatchError
	var perm *engine.Permanent
	if !errors.As(err, &hm) || !errors.As(err, &perm) || hm.URL != bad.URL+"/x" || hm.Expected != sha || hm.Actual != (nodeuptest.Asset{Data: []byte("bad bytes")}).SHA256() {
		t.Fatalf("err = %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(root2, CacheDir)); len(ents) != 0 {
		t.Fatalf("cache has %v", ents)
	}
}

func TestAssetUsesProxyFromEnvironment(t *testing.T) {
	data := []byte("via proxy")
	var seen string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.URL.String() // absolute URL: this is a proxy request
		w.Write(data)
	}))
	t.Cleanup(proxy.Close)
	t.Setenv("HTTP_PROXY", proxy.URL)
	t.Setenv("http_proxy", proxy.URL)
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")
	root := t.TempDir()
	e, _ := env(t, root)
	e.HTTP = DefaultHTTPClient()
	// assets.invalid does not resolve: only the proxy can serve it.
	a := &Asset{Name: "p", SHA256: nodeuptest.Asset{Data: data}.SHA256(), URLs: []string{"http://assets.invalid/p"}}
	converge(t, e, a)
	if u, _ := url.Parse(seen); u == nil || u.Host != "assets.invalid" {
		t.Fatalf("proxy saw %q", seen)
	}
}

func TestAptPackages(t *testing.T) {
	root := t.TempDir()
	e, r := env(t, root)
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.MkdirAll(filepath.Join(root, "var/lib/dpkg/updates"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/os-release"), []byte("ID=debian\nVERSION_ID=\"12\"\n"), 0o644)
	os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), []byte("Package: socat\nStatus: install ok installed\n\nPackage: conntrack\nStatus: deinstall ok config-files\n"), 0o644)
	p := &Packages{Names: []string{"socat", "conntrack", "ebtables"}}
	d, err := p.Find(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	pd := d.(*PackagesDiff)
	if pd.Manager != "apt" || strings.Join(pd.Install, ",") != "conntrack,ebtables" || pd.Repair {
		t.Fatalf("diff %+v", pd)
	}
	if len(r.Commands()) != 0 {
		t.Fatal("Find ran commands")
	}
	// An interrupted dpkg run is repaired first.
	os.WriteFile(filepath.Join(root, "var/lib/dpkg/updates/0001"), []byte("x"), 0o644)
	d, _ = p.Find(context.Background(), e)
	if !d.(*PackagesDiff).Repair {
		t.Fatal("no repair planned")
	}
	var plan strings.Builder
	d.Render(&plan)
	if !strings.Contains(plan.String(), "dpkg --configure -a") || !strings.Contains(plan.String(), "chroot "+root) {
		t.Fatalf("plan %s", plan.String())
	}
	r.Fail = func(cmd string) error {
		if strings.Contains(cmd, "apt-get install") && !strings.Contains(strings.Join(r.Commands(), "|"), "apt-get update") {
			return errors.New("E: Unable to locate package")
		}
		return nil
	}
	if err := p.Apply(context.Background(), e, d); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"chroot " + root + " dpkg --configure -a",
		"chroot " + root + " apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confold conntrack ebtables",
		"chroot " + root + " apt-get update",
		"chroot " + root + " apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confold conntrack ebtables",
	}
	if got := r.Commands(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("commands:\n%s", strings.Join(got, "\n"))
	}
}

func TestDistroDetection(t *testing.T) {
	for _, c := range []struct{ osr, want, err string }{
		{"ID=ubuntu\n", "apt", ""},
		{"ID=rocky\nID_LIKE=\"rhel centos fedora\"\n", "dnf", ""},
		{"ID=linuxmint\nID_LIKE=ubuntu\n", "apt", ""},
		{"ID=arch\n", "", `ID="arch"`},
	} {
		root := t.TempDir()
		e, _ := env(t, root)
		os.MkdirAll(filepath.Join(root, "etc"), 0o755)
		os.WriteFile(filepath.Join(root, "etc/os-release"), []byte(c.osr), 0o644)
		m, err := DetectPackageManager(e)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), "/etc/os-release") {
				t.Errorf("%q: err = %v", c.osr, err)
			}
			continue
		}
		if err != nil || m.Name() != c.want {
			t.Errorf("%q: %v %v", c.osr, m, err)
		}
	}
}

func TestSysctlLiveApplyThroughProc(t *testing.T) {
	proc := t.TempDir()
	os.MkdirAll(filepath.Join(proc, "net/ipv4"), 0o755)
	os.WriteFile(filepath.Join(proc, "net/ipv4/ip_forward"), []byte("0\n"), 0o644)
	conf := filepath.Join(t.TempDir(), "99-k.conf")
	e, _ := env(t, "/")
	s := &Sysctl{Path: conf, Values: map[string]string{"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1"}, ProcDir: proc}
	d := converge(t, e, s).(*SysctlDiff)
	if len(d.Set) != 1 || d.Set[0][0] != "net.ipv4.ip_forward" || !strings.Contains(d.Note, "bridge-nf-call-iptables not settable now") {
		t.Fatalf("diff %+v", d)
	}
	b, _ := os.ReadFile(filepath.Join(proc, "net/ipv4/ip_forward"))
	if strings.TrimSpace(string(b)) != "1" {
		t.Fatalf("ip_forward = %q", b)
	}
	b, _ = os.ReadFile(conf)
	if string(b) != "# Managed by nodeup.\nnet.bridge.bridge-nf-call-iptables = 1\nnet.ipv4.ip_forward = 1\n" {
		t.Fatalf("file %q", b)
	}
}

func TestKernelModulesLoadAndWarnInContainers(t *testing.T) {
	sys := t.TempDir()
	os.MkdirAll(filepath.Join(sys, "overlay"), 0o755)
	conf := filepath.Join(t.TempDir(), "k.conf")
	e, r := env(t, "/")
	e.Log = discard()
	k := &KernelModules{Path: conf, Modules: []string{"br_netfilter", "overlay"}, SysModule: sys}
	d, err := k.Find(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	if l := d.(*ModulesDiff).Load; strings.Join(l, ",") != "br_netfilter" {
		t.Fatalf("load %v", l)
	}
	r.Fail = func(string) error { return errors.New("Operation not permitted") }
	err = k.Apply(context.Background(), e, d)
	var w *engine.Warning
	if !errors.As(err, &w) || !strings.Contains(err.Error(), "modprobe br_netfilter") {
		t.Fatalf("err = %v", err)
	}
	if got := r.Commands(); strings.Join(got, ",") != "modprobe br_netfilter" {
		t.Fatal(got)
	}
	if b, _ := os.ReadFile(conf); string(b) != "# Managed by nodeup.\nbr_netfilter\noverlay\n" {
		t.Fatalf("file %q", b)
	}
	// Not live: only the file, never modprobe.
	root := t.TempDir()
	e2, r2 := env(t, root)
	converge(t, e2, &KernelModules{Path: "/etc/modules-load.d/k.conf", Modules: []string{"br_netfilter"}, SysModule: sys})
	if len(r2.Commands()) != 0 {
		t.Fatal(r2.Commands())
	}
}

func TestUnifiedDiff(t *testing.T) {
	a := []byte("1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n13\n")
	b := []byte("1\n2\n3\n4\nfive\n6\n7\n8\n9\n10\n11\n12\nthirteen\n")
	got := unifiedDiff("/f", a, b)
	want := "--- /f\n+++ /f (wanted)\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n@@ -10,4 +10,4 @@\n 10\n 11\n 12\n-13\n+thirteen\n"
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	if !strings.Contains(unifiedDiff("/b", []byte{0, 1}, []byte{2}), "binary") {
		t.Fatal("binary not summarised")
	}
}

func TestUserAndGroupEditAccountFiles(t *testing.T) {
	root := t.TempDir()
	e, _ := env(t, root)
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/bash\nsys:x:999:999::/:/usr/sbin/nologin\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\nsys:x:999:\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/shadow"), []byte("root:*:::::::\n"), 0o640)
	acc := &Accounts{}
	converge(t, e, &Group{Name: "etcd", Accounts: acc})
	converge(t, e, &User{Name: "etcd", Group: "etcd", Home: "/var/lib/etcd", Accounts: acc})
	p, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	g, _ := os.ReadFile(filepath.Join(root, "etc/group"))
	s, _ := os.ReadFile(filepath.Join(root, "etc/shadow"))
	if !strings.HasSuffix(string(p), "etcd:x:998:998::/var/lib/etcd:/usr/sbin/nologin\n") || !strings.HasPrefix(string(p), "root:x:0:0") {
		t.Fatalf("passwd:\n%s", p)
	}
	if !strings.HasSuffix(string(g), "etcd:x:998:\n") {
		t.Fatalf("group:\n%s", g)
	}
	if !strings.HasSuffix(string(s), "etcd:!*:::::::\n") {
		t.Fatalf("shadow:\n%s", s)
	}
	fi, _ := os.Stat(filepath.Join(root, "etc/shadow"))
	if fi.Mode().Perm() != 0o640 {
		t.Fatalf("shadow mode %v", fi.Mode())
	}
}
