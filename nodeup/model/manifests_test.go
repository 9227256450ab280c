package model

import (
	stdflag "flag"
	"reflect"
	"strings"
	"testing"

	"github.com/kopsnode/agents/nodeup/tasks"
	"github.com/kopsnode/agents/pkg/config"
	"github.com/kopsnode/agents/protokube/manifests"
	units "github.com/kopsnode/agents/systemd-units"
)

// withAPIServer is the example control-plane configuration with the
// kube-apiserver asset, which is what makes a node run the API server.
func withAPIServer(t *testing.T) *config.NodeConfig {
	t.Helper()
	n := load(t, "control-plane")
	if !hasAsset(n.Spec, "kube-apiserver") {
		n.Spec.Assets = append(n.Spec.Assets, config.Asset{Name: "kube-apiserver", SHA256: strings.Repeat("a", 64), URLs: []string{"https://example.invalid/kube-apiserver"}})
	}
	return n
}

func TestManifestsUnit(t *testing.T) {
	g, err := BuildWith(&Input{Config: withAPIServer(t), StoreURL: "s3://bucket/prefix", StoreEndpoint: "http://10.0.0.1:9000", StoreRegion: "eu-west-1"}, Builders())
	if err != nil {
		t.Fatal(err)
	}
	tk, ok := g.Get(tasks.UnitID("protokube-manifests.service"))
	if !ok {
		t.Fatal("no protokube-manifests.service on a node running the API server")
	}
	svc := tk.(*tasks.Service)
	if !reflect.DeepEqual(svc.Inputs, []string{units.ProtokubeBin, units.ManifestsConfigCopy}) {
		t.Errorf("inputs %v", svc.Inputs)
	}
	// The rendered command line is one the real command accepts.
	var execStart string
	for _, l := range strings.Split(svc.Content, "\n") {
		if v, ok := strings.CutPrefix(l, "ExecStart="); ok {
			execStart = v
		}
	}
	fields := strings.Fields(execStart)
	if len(fields) < 2 || fields[0] != units.ProtokubeBin || fields[1] != "manifests" {
		t.Fatalf("ExecStart=%s", execStart)
	}
	cmd := manifests.Command()
	fs := stdflag.NewFlagSet("manifests", stdflag.ContinueOnError)
	cmd.Flags(fs)
	if err := fs.Parse(fields[2:]); err != nil {
		t.Fatalf("ExecStart=%s: %v", execStart, err)
	}
	for flagName, want := range map[string]string{"config": units.ManifestsConfigCopy, "store": "s3://bucket/prefix", "kubeconfig": manifests.DefaultKubeconfig, "status-listen": manifests.DefaultStatusAddr,
		"store-endpoint": "http://10.0.0.1:9000", "store-region": "eu-west-1", "store-path-style": "false"} {
		if got := fs.Lookup(flagName).Value.String(); got != want {
			t.Errorf("--%s=%s, want %s", flagName, got, want)
		}
	}

	// The configuration copy is one the command loads, with what it reads.
	ft, ok := g.Get(tasks.FileID(units.ManifestsConfigCopy))
	if !ok {
		t.Fatalf("no %s", units.ManifestsConfigCopy)
	}
	copyCfg, err := config.ParseNodeConfig(ft.(*tasks.File).Content, units.ManifestsConfigCopy)
	if err != nil {
		t.Fatalf("the copy does not load: %v", err)
	}
	if _, err := manifests.InputsFromNode(copyCfg, units.ManifestsConfigCopy); err != nil {
		t.Errorf("the copy lacks an input: %v", err)
	}
	orig := withAPIServer(t)
	if copyCfg.Spec.ClusterName != orig.Spec.ClusterName || copyCfg.Spec.Networking.ServiceCIDR != orig.Spec.Networking.ServiceCIDR ||
		copyCfg.Spec.Kubelet.ClusterDNS != orig.Spec.Kubelet.ClusterDNS || copyCfg.Spec.Kubelet.ClusterDomain != orig.Spec.Kubelet.ClusterDomain {
		t.Errorf("copy %+v differs from the configuration %+v", copyCfg.Spec, orig.Spec)
	}
}

// A change the manifests do not depend on leaves the copy, and so the
// running applier, alone.
func TestManifestsConfigCopyIgnoresOtherFields(t *testing.T) {
	a := withAPIServer(t)
	b := withAPIServer(t)
	b.Spec.Kubelet.MaxPods = a.Spec.Kubelet.MaxPods + 10
	b.Spec.Sysctls = map[string]string{"vm.swappiness": "1"}
	da, _ := config.Marshal(ManifestsConfig(a))
	db, _ := config.Marshal(ManifestsConfig(b))
	if string(da) != string(db) {
		t.Errorf("unrelated change changed the copy:\n%s\n---\n%s", da, db)
	}
	b.Spec.Kubelet.ClusterDomain = "other.local"
	db, _ = config.Marshal(ManifestsConfig(b))
	if string(da) == string(db) {
		t.Error("a cluster domain change did not change the copy")
	}
}

func TestNoManifestsUnitWithoutAPIServer(t *testing.T) {
	for _, name := range []string{"nodes", "control-plane"} {
		n := load(t, name)
		if hasAsset(n.Spec, "kube-apiserver") {
			continue
		}
		g, err := Build(&Input{Config: n, StoreURL: "file:///s"})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := g.Get(tasks.UnitID("protokube-manifests.service")); ok {
			t.Errorf("%s: protokube-manifests.service without an API server on the node", name)
		}
	}
}
