package testtools

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/kopsnode/agents/pkg/testtools/parts"
)

// Pinned versions of the parts make tools builds (their one home is
// pkg/testtools/parts, which tools/build-test-tools.sh is tested against).
const (
	KubernetesVersion = parts.KubernetesVersion // "1.37.2"
	ContainerdVersion = parts.ContainerdVersion // "2.4.2"
	RuncVersion       = parts.RuncVersion       // "1.4.4"
	CNIPluginsVersion = parts.CNIPluginsVersion // "1.10.0"
	CoreDNSVersion    = parts.CoreDNSVersion    // "1.15.0"

	PauseImage   = parts.PauseImage   // "registry.k8s.io/pause:3.10.1"
	CoreDNSImage = parts.CoreDNSImage // "registry.k8s.io/coredns/coredns:v1.15.0"
	TestappImage = parts.TestappImage // "localhost/kopsnode/testapp:v1"
)

// KubernetesBin returns the path of a Kubernetes command of
// KubernetesVersion (kube-apiserver, kube-controller-manager,
// kube-scheduler, kube-proxy, kubelet, kubectl).
func KubernetesBin(t testing.TB, name string) string {
	t.Helper()
	known(t, "Kubernetes binary", name, parts.KubernetesBinaries())
	return part(t, "kubernetes "+KubernetesVersion+" "+name, parts.KubernetesPath(name))
}

// ContainerdBin returns the path of containerd, containerd-shim-runc-v2 or
// ctr of ContainerdVersion. The three share a directory: put it first in
// PATH of a containerd so it finds its shim.
func ContainerdBin(t testing.TB, name string) string {
	t.Helper()
	known(t, "containerd binary", name, parts.ContainerdBinaries())
	return part(t, "containerd "+ContainerdVersion+" "+name, parts.ContainerdPath(name))
}

// RuncBin returns the path of runc RuncVersion (static, with seccomp).
func RuncBin(t testing.TB) string {
	t.Helper()
	return part(t, "runc "+RuncVersion, parts.RuncPath())
}

// CNIPluginDir returns the directory holding the CNI plugins of
// CNIPluginsVersion (bridge, host-local, loopback, portmap, ptp), checking
// that every one is there.
func CNIPluginDir(t testing.TB) string {
	t.Helper()
	for _, n := range parts.CNIPlugins() {
		part(t, "CNI plugin "+n+" "+CNIPluginsVersion, filepath.Join(parts.CNIPluginDir(), n))
	}
	return filepath.Join(Dir(), parts.CNIPluginDir())
}

// ImageTar returns the path of an OCI image-layout tarball (pause, coredns,
// testapp), for `ctr -n k8s.io images import`; ImageRef gives its name.
func ImageTar(t testing.TB, name string) string {
	t.Helper()
	ImageRef(t, name)
	return part(t, "image "+name, parts.ImagePath(name))
}

// ImageRef returns the reference an image tarball is imported as
// (pause -> registry.k8s.io/pause:3.10.1).
func ImageRef(t testing.TB, name string) string {
	t.Helper()
	var names []string
	for _, im := range parts.Images() {
		if im.Name == name {
			return im.Ref
		}
		names = append(names, im.Name)
	}
	known(t, "image", name, names)
	return ""
}

// Parts returns the manifest (parts.json) of the tools directory: every
// built part with its version and sha256, for a test's asset mirror.
func Parts(t testing.TB) parts.Manifest {
	t.Helper()
	m, err := parts.ReadManifest(Dir())
	if err != nil {
		t.Fatalf("test tools manifest: %v: run `make tools` (TOOLS_DIR=%s)", err, Dir())
	}
	return m
}

// known fails the test when name is not one of names: a typo, not a
// missing build.
func known(t testing.TB, what, name string, names []string) {
	t.Helper()
	if !slices.Contains(names, name) {
		t.Fatalf("no %s %q: make tools builds %q", what, name, names)
	}
}

// part returns Dir()/rel, failing the test with what to run when it is
// missing.
func part(t testing.TB, what, rel string) string {
	t.Helper()
	p := filepath.Join(Dir(), rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("test part %s not found at %s: run `make tools` (TOOLS_DIR=%s)", what, p, Dir())
	}
	return p
}
