package model

import (
	"strings"
	"testing"

	"github.com/kopsnode/agents/nodeup/tasks"
	"github.com/kopsnode/agents/pkg/config"
)

// TestWorkerNeverIssuesFromACAKey: workers join by TLS bootstrap, so their
// graph has no task that loads a CA key (tasks.Kubeconfig issues from one);
// control-plane nodes keep their issued certificate and create the token.
func TestWorkerNeverIssuesFromACAKey(t *testing.T) {
	w, err := Build(&Input{Config: load(t, "nodes"), StoreURL: "file:///s", Hostname: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range w.IDs() {
		task, _ := w.Get(id)
		switch task.(type) {
		case *tasks.Kubeconfig, *tasks.BootstrapToken:
			t.Errorf("worker has %s (%T)", id, task)
		}
	}
	if _, ok := w.Get(tasks.FileID(KubeletBootstrapKubeconfig)); !ok {
		t.Error("worker has no bootstrap kubeconfig")
	}
	env := KubeletEnvFile(load(t, "nodes").Spec)
	if !strings.Contains(env, "--bootstrap-kubeconfig="+KubeletBootstrapKubeconfig) {
		t.Errorf("worker kubelet flags: %s", env)
	}

	cp := load(t, "control-plane")
	// The node name is the hostname lower-cased, as the kubelet registers it.
	g, err := Build(&Input{Config: cp, StoreURL: "file:///s", Hostname: "CP1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := g.Get(tasks.BootstrapTokenID); !ok {
		t.Error("control plane does not create the bootstrap token")
	}
	k, ok := g.Get(tasks.FileID(KubeletKubeconfig))
	if kc, _ := k.(*tasks.Kubeconfig); !ok || kc == nil || kc.User != "system:node:cp1" {
		t.Errorf("control-plane kubelet kubeconfig task %#v", k)
	}
	if strings.Contains(KubeletEnvFile(cp.Spec), "bootstrap") {
		t.Error("control-plane kubelet bootstraps")
	}
}

func TestKubeProxyOnlyWithAssetAndNotDisabled(t *testing.T) {
	f := false
	for _, c := range []struct {
		name  string
		edit  func(*config.NodeConfigSpec)
		wants bool
	}{
		{"asset", nil, true},
		{"disabled", func(s *config.NodeConfigSpec) { s.KubeProxy = &config.KubeProxySpec{Enabled: &f} }, false},
		{"no asset", func(s *config.NodeConfigSpec) {
			var keep []config.Asset
			for _, a := range s.Assets {
				if a.Name != "kube-proxy" {
					keep = append(keep, a)
				}
			}
			s.Assets = keep
		}, false},
	} {
		n := load(t, "nodes")
		if c.edit != nil {
			c.edit(&n.Spec)
		}
		g, err := Build(&Input{Config: n, Hostname: "n1"})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		task, has := g.Get(tasks.UnitID("kube-proxy.service"))
		if has != c.wants {
			t.Errorf("%s: kube-proxy unit %t, want %t", c.name, has, c.wants)
		}
		if !has {
			continue
		}
		unit := task.(*tasks.Service).Content
		for _, flag := range []string{"--kubeconfig=/var/lib/kubelet/kubeconfig", "--hostname-override=n1", "--cluster-cidr=" + n.Spec.Networking.PodCIDR, "--proxy-mode=iptables", "--conntrack-max-per-core=0"} {
			if !strings.Contains(unit, flag) {
				t.Errorf("kube-proxy unit lacks %s:\n%s", flag, unit)
			}
		}
		if !strings.Contains(unit, "After=kubelet.service") {
			t.Errorf("kube-proxy does not start after the kubelet:\n%s", unit)
		}
	}
}

func TestImageAssetsAreImportedAfterContainerd(t *testing.T) {
	n := load(t, "nodes")
	g, err := Build(&Input{Config: n})
	if err != nil {
		t.Fatal(err)
	}
	task, ok := g.Get(tasks.ImageImportID("image-pause"))
	if !ok {
		t.Fatal("image-pause is not imported")
	}
	deps := strings.Join(task.Deps(), " ")
	for _, d := range []string{tasks.AssetID("image-pause"), tasks.UnitID("containerd.service"), tasks.FileID(CtrBin)} {
		if !strings.Contains(deps, d) {
			t.Errorf("import deps %s lack %s", deps, d)
		}
	}
	kubelet, _ := g.Get(tasks.UnitID("kubelet.service"))
	if !strings.Contains(strings.Join(kubelet.Deps(), " "), tasks.ImageImportID("image-pause")) {
		t.Errorf("the kubelet starts before the images are imported: deps %v", kubelet.Deps())
	}
	for i := range n.Spec.Assets {
		if n.Spec.Assets[i].Name == "image-pause" {
			n.Spec.Assets[i].Extract = true
		}
	}
	if _, err := Build(&Input{Config: n}); err == nil || !strings.Contains(err.Error(), "image-pause") {
		t.Errorf("an extracted image archive: %v", err)
	}
}

func TestContainerdSchemaFollowsVersion(t *testing.T) {
	for v, want := range map[string]string{"": "version = 3", "2.4.2": "version = 3", "1.7.27": "version = 2"} {
		n := load(t, "nodes")
		n.Spec.ContainerRuntime.Version = v
		g, err := Build(&Input{Config: n})
		if err != nil {
			t.Fatal(err)
		}
		task, _ := g.Get(tasks.FileID(ContainerdConfig))
		if c := string(task.(*tasks.File).Content); !strings.Contains(c, want+"\n") {
			t.Errorf("containerd %q: config lacks %q:\n%s", v, want, c)
		}
	}
}

func TestManagedPathsCoverWrittenFiles(t *testing.T) {
	g, err := Build(&Input{Config: load(t, "nodes")})
	if err != nil {
		t.Fatal(err)
	}
	paths := strings.Join(ManagedPaths(g), "\n") + "\n"
	for _, p := range []string{KubeletBootstrapKubeconfig, RuncBin, ContainerdConfig, "/etc/systemd/system/kubelet.service", "/etc/systemd/system/multi-user.target.wants/kubelet.service"} {
		if !strings.Contains(paths, p+"\n") {
			t.Errorf("managed paths lack %s", p)
		}
	}
}
