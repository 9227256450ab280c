package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/pkg/releases"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/storeurl"
	"github.com/kopsnode/agents/pkg/testtools"
)

const renderCluster = "rendered.k8s.local"

// renderMirror serves a release mirror of the real table laid out by
// releases.WriteMirror from stand-in parts, and returns its base URL.
func renderMirror(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files, err := releases.MirrorLayout(releases.Table()[len(releases.Table())-1], "0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	if err := releases.WriteMirror(dir, files, func(p releases.Part) ([]byte, error) { return []byte("stand-in " + p.String()), nil }); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	t.Cleanup(srv.Close)
	return srv.URL
}

func renderClusterFile(t *testing.T, mirror, etcd string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cluster.yaml")
	data := fmt.Sprintf(`apiVersion: agents.kopsnode.io/v1alpha1
kind: Cluster
metadata:
  name: %s
spec:
  kubernetesVersion: 1.37.2
  networking: {mode: kubenet}
  containerRuntime: {restrictOOMScoreAdj: true}
  assets: {mirror: %s, nodeupVersion: 0.1.0}
  kubelet: {failCgroupV1: false}
  etcdClusters:
    - {name: main, members: 1, version: %s}
    - {name: events, members: 1, version: 3.6.16}
  gossip: {}
`, renderCluster, mirror, etcd)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// bootConfigOf extracts the boot configuration a userdata script writes.
func bootConfigOf(t *testing.T, script string) *BootConfig {
	t.Helper()
	_, rest, ok := strings.Cut(script, "<<'NODEUP_BOOT_CONFIG_EOF'\n")
	body, _, ok2 := strings.Cut(rest, "NODEUP_BOOT_CONFIG_EOF\n")
	if !ok || !ok2 {
		t.Fatalf("no boot configuration in the userdata:\n%s", script)
	}
	bc, err := ParseBootConfig([]byte(body), "userdata")
	if err != nil {
		t.Fatal(err)
	}
	return bc
}

// `nodeup render` on a file:// store: userdata files pinned to the stored
// configurations, identical to what `nodeup bootstrap-script` prints for
// the same flags; a rendered worker configuration plans with `nodeup apply
// --dry-run`; a re-run changes nothing.
func TestCLIRenderFileStore(t *testing.T) {
	ctx := context.Background()
	storeDir, udDir := t.TempDir(), filepath.Join(t.TempDir(), "userdata")
	storeURL := "file://" + storeDir
	cf := renderClusterFile(t, renderMirror(t), "3.6.16")
	app := NewApp(fileOpener)

	var out bytes.Buffer
	code := app.Run(ctx, cliEnv(&out), []string{"render", "--cluster-file", cf, "--store", storeURL, "--userdata-dir", udDir, "--log-level", "warn"})
	if code != 0 {
		t.Fatalf("render exit %d:\n%s", code, out.String())
	}
	if !strings.Contains(out.String(), "created CA kubernetes-ca") || !strings.Contains(out.String(), "userdata of group nodes: "+filepath.Join(udDir, "nodes.sh")) {
		t.Errorf("render output:\n%s", out.String())
	}
	st, err := fileOpener(ctx, BootConfig{Store: storeURL})
	if err != nil {
		t.Fatal(err)
	}
	for _, group := range []string{"control-plane", "nodes"} {
		script, err := os.ReadFile(filepath.Join(udDir, group+".sh"))
		if err != nil {
			t.Fatal(err)
		}
		bc := bootConfigOf(t, string(script))
		cfg, _, err := store.ReadAll(ctx, st, ConfigKey(renderCluster, group))
		if err != nil {
			t.Fatal(err)
		}
		if bc.Store != storeURL || bc.Cluster != renderCluster || bc.Group != group || bc.ConfigHash != config.FileHash(cfg) {
			t.Errorf("group %s: boot configuration %+v, stored configuration hash %s", group, bc, config.FileHash(cfg))
		}
		var bs bytes.Buffer
		// The same app as render: each run parses into fresh options.
		if code := app.Run(ctx, cliEnv(&bs), []string{"bootstrap-script", "--store", storeURL, "--cluster", renderCluster, "--group", group,
			"--config-hash", bc.ConfigHash, "--nodeup-url", nodeupURL(t, string(script)), "--nodeup-sha256", nodeupSHA(t, string(script))}); code != 0 {
			t.Fatalf("bootstrap-script exit %d: %s", code, bs.String())
		}
		if bs.String() != string(script) {
			t.Errorf("group %s: render's userdata differs from bootstrap-script's", group)
		}
	}

	// nodeup itself accepts the rendered worker configuration and plans it.
	nodesBC := bootConfigOf(t, mustRead(t, filepath.Join(udDir, "nodes.sh")))
	out.Reset()
	code = app.Run(ctx, cliEnv(&out), []string{"apply", "--store", storeURL, "--cluster", renderCluster, "--group", "nodes",
		"--config-hash", nodesBC.ConfigHash, "--root", t.TempDir(), "--dry-run", "--log-level", "warn"})
	if code != 0 || !strings.Contains(out.String(), "/usr/local/bin/kubelet") {
		t.Errorf("apply --dry-run of the rendered worker exit %d:\n%s", code, out.String())
	}

	out.Reset()
	if code := app.Run(ctx, cliEnv(&out), []string{"render", "--cluster-file", cf, "--store", storeURL, "-o", "json", "--log-level", "warn"}); code != 0 {
		t.Fatalf("second render exit %d:\n%s", code, out.String())
	}
	var res RenderOutput
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("%v:\n%s", err, out.String())
	}
	if res.Changed() != 0 || len(res.Changes) == 0 || len(res.Userdata) != 2 {
		t.Errorf("second render: %d changed of %d, %d userdata", res.Changed(), len(res.Changes), len(res.Userdata))
	}
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func scriptVar(t *testing.T, script, name string) string {
	t.Helper()
	for _, l := range strings.Split(script, "\n") {
		if v, ok := strings.CutPrefix(l, name+"="); ok {
			return strings.Trim(v, "'")
		}
	}
	t.Fatalf("no %s in the script", name)
	return ""
}

func nodeupURL(t *testing.T, script string) string { return scriptVar(t, script, "NODEUP_URLS") }
func nodeupSHA(t *testing.T, script string) string { return scriptVar(t, script, "NODEUP_SHA256") }

// `nodeup render` on a real S3 server with the store flags bootstrap-script
// takes: the userdata carries them; a dry run after an etcd upgrade in
// cluster.yaml shows the diff and writes nothing; bad input names the file
// and field, and exits non-zero.
func TestCLIRenderMinIO(t *testing.T) {
	ctx := context.Background()
	m := testtools.StartMinIO(t, testtools.MinIOOptions{})
	m.CreateBucket(t, "state", false)
	t.Setenv(storeurl.EnvS3AccessKey, m.AccessKey)
	t.Setenv(storeurl.EnvS3SecretKey, m.SecretKey)
	mirror := renderMirror(t)
	storeFlags := []string{"--store", "s3://state/clusters", "--store-endpoint", m.Endpoint, "--store-region", m.Region, "--store-path-style"}
	app := NewApp(DefaultStoreOpener)

	var out bytes.Buffer
	args := append([]string{"render", "--cluster-file", renderClusterFile(t, mirror, "3.6.16"), "--log-level", "warn"}, storeFlags...)
	if code := app.Run(ctx, cliEnv(&out), args); code != 0 {
		t.Fatalf("render exit %d:\n%s", code, out.String())
	}
	_, ud, ok := strings.Cut(out.String(), "# ---- userdata of instance group control-plane ----\n")
	if !ok {
		t.Fatalf("no userdata printed:\n%s", out.String())
	}
	bc := bootConfigOf(t, ud)
	if bc.Store != "s3://state/clusters" || bc.StoreEndpoint != m.Endpoint || bc.StoreRegion != m.Region || !bc.StorePathStyle {
		t.Errorf("userdata boot configuration %+v lacks the store settings", bc)
	}
	settings := storeurl.Settings{URL: "s3://state/clusters", Endpoint: m.Endpoint, Region: m.Region, PathStyle: true}
	st, err := settings.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	before, err := st.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}

	out.Reset()
	args = append([]string{"render", "--dry-run", "--cluster-file", renderClusterFile(t, mirror, "3.7.3"), "--log-level", "warn"}, storeFlags...)
	if code := app.Run(ctx, cliEnv(&out), args); code != 0 {
		t.Fatalf("dry run exit %d:\n%s", code, out.String())
	}
	for _, want := range []string{"would update etcd cluster spec main", `+  "etcdVersion": "3.7.3"`, "would update node configuration control-plane", "unchanged node configuration nodes"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "#!/bin/sh") {
		t.Error("a dry run printed userdata pinned to a configuration the store does not hold")
	}
	after, err := st.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("the dry run wrote:\nbefore %v\nafter  %v", before, after)
	}

	bad := filepath.Join(t.TempDir(), "cluster.yaml")
	os.WriteFile(bad, []byte(strings.Replace(mustRead(t, renderClusterFile(t, mirror, "3.6.16")), "1.37.2", "1.36.0", 1)), 0o644)
	out.Reset()
	args = append([]string{"render", "--cluster-file", bad}, storeFlags...)
	if code := app.Run(ctx, cliEnv(&out), args); code == 0 || !strings.Contains(out.String(), bad+": spec.kubernetesVersion:") || !strings.Contains(out.String(), "supported: 1.37.2") {
		t.Errorf("unknown version: exit %d:\n%s", code, out.String())
	}
	out.Reset()
	if code := app.Run(ctx, cliEnv(&out), []string{"render", "--store", "s3://state"}); code == 0 || !strings.Contains(out.String(), "--cluster-file") {
		t.Errorf("no cluster file: exit %d:\n%s", code, out.String())
	}
}
