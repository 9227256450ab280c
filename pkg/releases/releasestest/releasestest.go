// Package releasestest lays out a release mirror (package releases) from
// the parts `make tools` builds, for tests that boot machines from a
// rendered cluster: serve the directory with an HTTP file server and point
// the cluster spec's assets.mirror at it.
package releasestest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/kopsnode/agents/pkg/releases"
	"github.com/kopsnode/agents/pkg/testtools"
)

// Source returns a releases source reading the test-tools parts at the
// pinned versions (a part at another version is an error), and kopsnode's
// own binaries (nodeup, protokube, etcd-manager) from kopsnode, by name.
func Source(t testing.TB, kopsnode map[string][]byte) func(releases.Part) ([]byte, error) {
	return func(p releases.Part) ([]byte, error) {
		t.Helper()
		want := map[string]string{"kubernetes": testtools.KubernetesVersion, "containerd": testtools.ContainerdVersion,
			"runc": testtools.RuncVersion, "cni-plugins": testtools.CNIPluginsVersion}[p.Component]
		if want != "" && p.Version != want {
			return nil, fmt.Errorf("part %s: make tools builds %s", p, want)
		}
		var path string
		switch p.Component {
		case "kubernetes":
			path = testtools.KubernetesBin(t, p.Name)
		case "containerd":
			path = testtools.ContainerdBin(t, p.Name)
		case "runc":
			path = testtools.RuncBin(t)
		case "cni-plugins":
			path = filepath.Join(testtools.CNIPluginDir(t), p.Name)
		case "etcd":
			path = filepath.Join(testtools.EtcdBinDir(t, p.Version), p.Name) // etcd or etcdutl
		case "image":
			path = testtools.ImageTar(t, p.Name)
		case "kopsnode":
			b, ok := kopsnode[p.Name]
			if !ok {
				return nil, fmt.Errorf("part %s: no kopsnode binary %q given", p, p.Name)
			}
			return b, nil
		default:
			return nil, fmt.Errorf("part %s: unknown component", p)
		}
		return os.ReadFile(path)
	}
}

// Files are the files of a test mirror: the table's release of
// testtools.KubernetesVersion at kopsnodeVersion, plus images/<name>.tar
// for each additional image (a test-tools image such as "testapp").
func Files(t testing.TB, kopsnodeVersion string, additionalImages ...string) []releases.File {
	t.Helper()
	r, err := releases.Lookup(releases.Table(), testtools.KubernetesVersion)
	if err != nil {
		t.Fatal(err)
	}
	files, err := releases.MirrorLayout(r, kopsnodeVersion)
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range additionalImages {
		files = append(files, releases.ImageFile(releases.Image{Name: im}))
	}
	return files
}

// Contents returns the test mirror's files (and their .sha256) by path
// relative to the mirror base, for a server that serves blobs by name.
// kopsnode holds the nodeup, protokube and etcd-manager binaries.
func Contents(t testing.TB, kopsnodeVersion string, kopsnode map[string][]byte, additionalImages ...string) map[string][]byte {
	t.Helper()
	c, err := releases.MirrorContents(Files(t, kopsnodeVersion, additionalImages...), Source(t, kopsnode))
	if err != nil {
		t.Fatalf("building the release mirror: %v", err)
	}
	return c
}

// WriteMirror lays out dir as the test mirror (see Files), for an HTTP
// file server.
func WriteMirror(t testing.TB, dir, kopsnodeVersion string, kopsnode map[string][]byte, additionalImages ...string) {
	t.Helper()
	if err := releases.WriteMirror(dir, Files(t, kopsnodeVersion, additionalImages...), Source(t, kopsnode)); err != nil {
		t.Fatalf("laying out the release mirror: %v", err)
	}
}
