package kuberender

import (
	"bytes"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"sigs.k8s.io/yaml"

	"github.com/kopsnode/agents/pkg/config"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (run with -update if intended):\n%s", name, got)
	}
}

func spec(t *testing.T, role config.Role, edit func(*config.NodeConfigSpec)) config.NodeConfigSpec {
	t.Helper()
	n := &config.NodeConfig{Spec: config.NodeConfigSpec{ClusterName: "example.k8s.local", Role: role}}
	if edit != nil {
		edit(&n.Spec)
	}
	n.SetDefaults()
	return n.Spec
}

var paths = ContainerdPaths{Runc: "/usr/local/sbin/runc", CNIBinDir: "/opt/cni/bin", CNIConfDir: "/etc/cni/net.d", CertsDir: "/etc/containerd/certs.d"}

func TestKubeletConfigGolden(t *testing.T) {
	f := false
	for _, c := range []struct {
		name string
		s    config.NodeConfigSpec
		o    KubeletOptions
	}{
		{"kubelet-worker.yaml", spec(t, config.RoleNode, nil), KubeletOptions{ClientCAFile: "/etc/kubernetes/pki/ca.crt", RotateCertificates: true}},
		{"kubelet-control-plane.yaml", spec(t, config.RoleControlPlane, func(s *config.NodeConfigSpec) {
			s.Kubelet.Taints = []string{"node-role.kubernetes.io/control-plane:NoSchedule", "dedicated=etcd:NoExecute"}
			s.Kubelet.FailCgroupV1 = &f
			s.Kubelet.ResolvConf = "/run/systemd/resolve/resolv.conf"
			s.Kubelet.EvictionHard = map[string]string{"memory.available": "100Mi", "nodefs.available": "1Gi"}
			s.ContainerRuntime.SystemdCgroup = &f
		}), KubeletOptions{ClientCAFile: "/etc/kubernetes/pki/ca.crt"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := KubeletConfigYAML(c.s, c.o)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, c.name, b)
			// It reads back into the official type with what was asked.
			var kc kubeletv1beta1.KubeletConfiguration
			if err := yaml.UnmarshalStrict(b, &kc); err != nil {
				t.Fatal(err)
			}
			if kc.Kind != "KubeletConfiguration" || kc.APIVersion != "kubelet.config.k8s.io/v1beta1" {
				t.Errorf("type %s/%s", kc.APIVersion, kc.Kind)
			}
			if kc.RotateCertificates != c.o.RotateCertificates || kc.ServerTLSBootstrap {
				t.Errorf("rotateCertificates %t serverTLSBootstrap %t", kc.RotateCertificates, kc.ServerTLSBootstrap)
			}
			if len(kc.RegisterWithTaints) != len(c.s.Kubelet.Taints) {
				t.Errorf("taints %v", kc.RegisterWithTaints)
			}
			if (kc.FailCgroupV1 == nil) != (c.s.Kubelet.FailCgroupV1 == nil) {
				t.Errorf("failCgroupV1 %v", kc.FailCgroupV1)
			}
			if !maps.Equal(kc.EvictionHard, c.s.Kubelet.EvictionHard) {
				t.Errorf("evictionHard %v, want %v", kc.EvictionHard, c.s.Kubelet.EvictionHard)
			}
			if len(kc.ClusterDNS) != 1 || kc.ClusterDNS[0] != "100.64.0.10" {
				t.Errorf("clusterDNS %v", kc.ClusterDNS)
			}
		})
	}
}

func TestParseTaint(t *testing.T) {
	tt, err := ParseTaint("k=v:NoExecute")
	if err != nil || tt.Key != "k" || tt.Value != "v" || tt.Effect != "NoExecute" {
		t.Fatalf("%+v %v", tt, err)
	}
	for _, bad := range []string{"k", "k=v:Sometimes", ":NoSchedule"} {
		if _, err := ParseTaint(bad); err == nil {
			t.Errorf("ParseTaint(%q) accepted", bad)
		}
	}
}

func TestContainerdConfigGolden(t *testing.T) {
	tr := true
	base := config.ContainerRuntimeSpec{
		Name: "containerd", SandboxImage: "registry.k8s.io/pause:3.10.1", SystemdCgroup: &tr,
		RegistryMirrors: map[string][]string{
			"docker.io":                 {"https://mirror-b.example.com", "http://mirror-a.example.com:5000"},
			"registry.example.com:5000": {"https://mirror-c.example.com"},
		},
	}
	v2 := base
	v2.Version = "2.4.2"
	v2.RestrictOOMScoreAdj = true
	v1 := base
	v1.Version = "1.7.27"
	for _, c := range []struct {
		name string
		rt   config.ContainerRuntimeSpec
	}{{"containerd-2.x.toml", v2}, {"containerd-1.x.toml", v1}} {
		t.Run(c.name, func(t *testing.T) {
			cfg, hosts, err := ContainerdConfig(c.rt, paths)
			if err != nil {
				t.Fatal(err)
			}
			out := append([]byte(nil), cfg...)
			for _, h := range hosts {
				out = append(out, "\n### "+h.Path+"\n"...)
				out = append(out, h.Content...)
			}
			golden(t, c.name, out)
			var m map[string]any
			if err := toml.Unmarshal(cfg, &m); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Mirrors keep their configured order in hosts.toml.
	_, hosts, _ := ContainerdConfig(v2, paths)
	if len(hosts) != 2 || hosts[0].Path != "/etc/containerd/certs.d/docker.io/hosts.toml" {
		t.Fatalf("hosts %v", hosts)
	}
	if s := string(hosts[0].Content); strings.Index(s, "mirror-b") > strings.Index(s, "mirror-a") {
		t.Errorf("mirror order lost:\n%s", s)
	}
	if _, _, err := ContainerdConfig(config.ContainerRuntimeSpec{Version: "3.0"}, paths); err == nil || !strings.Contains(err.Error(), "spec.containerRuntime.version") {
		t.Errorf("unsupported major: %v", err)
	}
}

func TestKubeconfig(t *testing.T) {
	ca := []byte("-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n")
	cert := KubeconfigSpec{Server: "https://127.0.0.1", CAPEM: ca, User: "system:node:n1",
		Credentials: Credentials{ClientCertPEM: []byte("cert"), ClientKeyPEM: []byte("key")}}
	token := KubeconfigSpec{Server: "https://api.internal.example.k8s.local", CAPEM: ca, User: "kubelet-bootstrap",
		Credentials: Credentials{Token: "abcdef.0123456789abcdef"}}
	for name, s := range map[string]KubeconfigSpec{"kubeconfig-cert.yaml": cert, "kubeconfig-token.yaml": token} {
		b, err := Kubeconfig(s)
		if err != nil {
			t.Fatal(err)
		}
		golden(t, name, b)
		got, err := ParseKubeconfig(b)
		if err != nil {
			t.Fatal(err)
		}
		if got.Server != s.Server || !bytes.Equal(got.CAPEM, ca) || got.Credentials.Token != s.Credentials.Token ||
			!bytes.Equal(got.Credentials.ClientCertPEM, s.Credentials.ClientCertPEM) || !bytes.Equal(got.Credentials.ClientKeyPEM, s.Credentials.ClientKeyPEM) {
			t.Errorf("%s round trip: %+v", name, got)
		}
	}
	for _, bad := range []KubeconfigSpec{
		{Server: "http://x", CAPEM: ca, User: "u", Credentials: Credentials{Token: "t"}},
		{Server: "https://x", User: "u", Credentials: Credentials{Token: "t"}},
		{Server: "https://x", CAPEM: ca, Credentials: Credentials{Token: "t"}},
		{Server: "https://x", CAPEM: ca, User: "u"},
		{Server: "https://x", CAPEM: ca, User: "u", Credentials: Credentials{Token: "t", ClientCertPEM: []byte("c"), ClientKeyPEM: []byte("k")}},
		{Server: "https://x", CAPEM: ca, User: "u", Credentials: Credentials{ClientCertPEM: []byte("c")}},
	} {
		if _, err := Kubeconfig(bad); err == nil {
			t.Errorf("Kubeconfig(%+v) accepted", bad)
		}
	}
	if _, err := ParseKubeconfig([]byte("current-context: x\n")); err == nil {
		t.Error("a kubeconfig without its context parsed")
	}
}
