package model

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/tasks"
	"github.com/kopsnode/agents/pkg/config"
	units "github.com/kopsnode/agents/systemd-units"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func load(t *testing.T, name string) *config.NodeConfig {
	t.Helper()
	n, err := config.LoadNodeConfigFile(filepath.Join("..", "..", "examples", "nodeup", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestGolden(t *testing.T) {
	for _, name := range []string{"control-plane", "nodes"} {
		t.Run(name, func(t *testing.T) {
			in := &Input{Config: load(t, name), StoreURL: "file:///srv/store", Group: name, Hostname: "node-1", NodeAddress: netip.MustParseAddr("10.0.0.10")}
			g, err := Build(in)
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			Describe(&b, g)
			golden := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./nodeup/model -update)", err)
			}
			if !bytes.Equal(want, b.Bytes()) {
				t.Fatalf("graph differs from %s (run with -update to accept):\n%s", golden, b.String())
			}
		})
	}
}

func TestControlPlaneHasAgentsWorkerHasNot(t *testing.T) {
	cp, err := Build(&Input{Config: load(t, "control-plane"), StoreURL: "file:///s"})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"unit:protokube.service", "unit:protokube-etcd-volumes.service", "unit:etcd-manager-main.service", "unit:etcd-manager-events.service", "unit:kubelet.service", "unit:containerd.service", "unit:nodeup.service", "file:/etc/cni/net.d/10-bridge.conflist"} {
		if _, ok := cp.Get(id); !ok {
			t.Errorf("control plane lacks %s", id)
		}
	}
	w, err := Build(&Input{Config: load(t, "nodes"), StoreURL: "file:///s"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := w.Get("unit:etcd-manager-main.service"); ok {
		t.Error("worker has etcd-manager")
	}
	if _, ok := w.Get("unit:kubelet.service"); !ok {
		t.Error("worker lacks kubelet")
	}
}

type extraWriter struct{ path string }

func (extraWriter) Name() string { return "rogue" }
func (e extraWriter) Build(in *Input, c *Collector) error {
	return c.Add(&tasks.Sysctl{Path: e.path, Values: map[string]string{"a.b": "1"}})
}

func TestSecondWriterIsABuildError(t *testing.T) {
	// A different task type at the same path: the ID differs or not, the
	// output owner check names both builders.
	_, err := BuildWith(&Input{Config: load(t, "nodes"), StoreURL: "file:///s"}, append(Builders(), extraWriter{ContainerdConfig}))
	if err == nil || !strings.Contains(err.Error(), "containerd and rogue") || !strings.Contains(err.Error(), ContainerdConfig) {
		t.Fatalf("err = %v", err)
	}
}

func TestMissingAssetNamesIt(t *testing.T) {
	n := load(t, "nodes")
	var keep []config.Asset
	for _, a := range n.Spec.Assets {
		if a.Name != "kubelet" {
			keep = append(keep, a)
		}
	}
	n.Spec.Assets = keep
	_, err := Build(&Input{Config: n})
	if err == nil || !strings.Contains(err.Error(), `no asset named "kubelet"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestNetworkingModes(t *testing.T) {
	for _, c := range []struct {
		mode, provider string
		conf           string
		plugins        bool
	}{
		// kubenet: protokube writes the node's configuration (package cni, KubenetConfig).
		{"kubenet", "", "", true},
		{"cni", "calico", "", true},
		{"external", "", "", false},
	} {
		n := load(t, "nodes")
		n.Spec.Networking.Mode, n.Spec.Networking.Provider = c.mode, c.provider
		if c.mode == "kubenet" {
			// protokube runs the kubenet pod network on every node.
			n.Spec.Assets = append(n.Spec.Assets, config.Asset{Name: "protokube", SHA256: strings.Repeat("a", 64), URLs: []string{"https://mirror.example.com/protokube"}})
		}
		g, err := Build(&Input{Config: n})
		if err != nil {
			t.Fatalf("%s: %v", c.mode, err)
		}
		var confs []string
		for _, id := range g.IDs() {
			if strings.HasPrefix(id, "file:/etc/cni/net.d/") {
				confs = append(confs, id)
			}
		}
		if (c.conf == "" && len(confs) != 0) || (c.conf != "" && (len(confs) != 1 || confs[0] != c.conf)) {
			t.Errorf("%s/%s: cni configs %v, want %q", c.mode, c.provider, confs, c.conf)
		}
		_, has := g.Get("file:/opt/cni/bin/bridge")
		if has != c.plugins {
			t.Errorf("%s: bridge plugin installed = %t", c.mode, has)
		}
	}
}

var _ engine.Task = (*tasks.File)(nil)

// TestNodeConfigCopyLoads checks that the configuration copy written for
// protokube etcd-volumes is a valid node configuration with the etcd clusters.
func TestNodeConfigCopyLoads(t *testing.T) {
	in := &Input{Config: load(t, "control-plane"), StoreURL: "file:///s"}
	g, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := g.Get(tasks.FileID(units.NodeConfigCopy))
	task, ok := got.(*tasks.File)
	if !ok {
		t.Fatalf("no file task for %s", units.NodeConfigCopy)
	}
	if task.Mode != 0o600 {
		t.Errorf("%s mode %v, want 0600", units.NodeConfigCopy, task.Mode)
	}
	n, err := config.ParseNodeConfig(task.Content, units.NodeConfigCopy)
	if err != nil {
		t.Fatalf("the copy does not parse: %v", err)
	}
	if len(n.Spec.EtcdClusters) != len(in.Config.Spec.EtcdClusters) || n.Spec.ClusterName != in.Config.Spec.ClusterName {
		t.Fatalf("copy = %+v", n.Spec)
	}
}
