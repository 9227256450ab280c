// Package parts is the layout of the test-tools cache that
// tools/build-test-tools.sh (make tools) fills: the pinned version of every
// part, where each part lives under the cache directory, and the parts.json
// manifest that lists them with their sha256. It imports nothing but the
// standard library so that tools/ programs and tests share one home for it.
package parts

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Pinned versions. tools/build-test-tools.sh carries the same values (a test
// compares them); change both together.
const (
	KubernetesVersion = "1.37.2"
	ContainerdVersion = "2.4.2"
	RuncVersion       = "1.4.4"
	CNIPluginsVersion = "1.10.0"
	CoreDNSVersion    = "1.15.0"
	FakeGCSVersion    = "1.56.1"
	// MinIOVersion is a Go pseudo-version: MinIO publishes no module tags.
	MinIOVersion = "v0.0.0-20260212201848-7aac2a2c5b7c"
)

// Image references of the OCI image tarballs under images/.
const (
	PauseImage   = "registry.k8s.io/pause:3.10.1"
	CoreDNSImage = "registry.k8s.io/coredns/coredns:v" + CoreDNSVersion
	TestappImage = "localhost/kopsnode/testapp:v1"
)

// ManifestFile is the name of the manifest in the cache directory.
const ManifestFile = "parts.json"

// EtcdVersions are the etcd versions built by default (ETCD_VERSIONS in
// the script overrides them there).
func EtcdVersions() []string { return []string{"3.5.21", "3.6.16", "3.7.3"} }

// KubernetesBinaries are the commands built from k8s.io/kubernetes.
func KubernetesBinaries() []string {
	return []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubelet", "kubectl"}
}

// ContainerdBinaries are the commands built from containerd.
func ContainerdBinaries() []string { return []string{"containerd", "containerd-shim-runc-v2", "ctr"} }

// CNIPlugins are the CNI plugins built from containernetworking/plugins.
func CNIPlugins() []string { return []string{"bridge", "host-local", "loopback", "portmap", "ptp"} }

// Image is one OCI image tarball of the cache.
type Image struct {
	// Name is the tarball's base name: images/<Name>.tar.
	Name string
	// Ref is the image reference it is imported as.
	Ref string
}

// Images are the image tarballs the script builds.
func Images() []Image {
	return []Image{
		{Name: "pause", Ref: PauseImage},
		{Name: "coredns", Ref: CoreDNSImage},
		{Name: "testapp", Ref: TestappImage},
	}
}

// Paths relative to the cache directory, in the layout etcd-manager and the
// tests expect.

// ToolPath is bin/<name>: minio, fake-gcs-server, coredns.
func ToolPath(name string) string { return filepath.Join("bin", name) }

// EtcdPath is etcd/v<version>/etcd.
func EtcdPath(version string) string { return filepath.Join("etcd", "v"+version, "etcd") }

// EtcdutlPath is etcd/v<version>/etcdutl, beside etcd as nodeup installs it.
func EtcdutlPath(version string) string { return filepath.Join("etcd", "v"+version, "etcdutl") }

// KubernetesPath is kubernetes/v<KubernetesVersion>/<name>.
func KubernetesPath(name string) string {
	return filepath.Join("kubernetes", "v"+KubernetesVersion, name)
}

// ContainerdPath is containerd/v<ContainerdVersion>/bin/<name>.
func ContainerdPath(name string) string {
	return filepath.Join("containerd", "v"+ContainerdVersion, "bin", name)
}

// RuncPath is runc/v<RuncVersion>/runc.
func RuncPath() string { return filepath.Join("runc", "v"+RuncVersion, "runc") }

// CNIPluginDir is cni/v<CNIPluginsVersion>, the directory holding the plugins.
func CNIPluginDir() string { return filepath.Join("cni", "v"+CNIPluginsVersion) }

// ImagePath is images/<name>.tar.
func ImagePath(name string) string { return filepath.Join("images", name+".tar") }

// Part is one file of the cache, as listed in parts.json.
type Part struct {
	// Name is the binary's or image's name ("kubelet", "etcd", "pause").
	Name string `json:"name"`
	// Version is the pinned version without a leading "v" (MinIO's is a
	// pseudo-version and keeps it); for an image tarball, the image's tag.
	Version string `json:"version"`
	// Path is relative to the directory holding parts.json.
	Path string `json:"path"`
	// SHA256 is the hex sha256 of the file.
	SHA256 string `json:"sha256"`
	// Image is the image reference, for image tarballs only.
	Image string `json:"image,omitempty"`
}

// Manifest is parts.json.
type Manifest struct {
	Parts []Part `json:"parts"`
}

// Expected lists every part of a complete cache (etcd at the given
// versions), without hashes.
func Expected(etcdVersions []string) []Part {
	var ps []Part
	add := func(name, version, path, image string) {
		ps = append(ps, Part{Name: name, Version: version, Path: path, Image: image})
	}
	add("minio", MinIOVersion, ToolPath("minio"), "")
	add("fake-gcs-server", FakeGCSVersion, ToolPath("fake-gcs-server"), "")
	add("coredns", CoreDNSVersion, ToolPath("coredns"), "")
	for _, v := range etcdVersions {
		add("etcd", v, EtcdPath(v), "")
		add("etcdutl", v, EtcdutlPath(v), "")
	}
	for _, n := range KubernetesBinaries() {
		add(n, KubernetesVersion, KubernetesPath(n), "")
	}
	for _, n := range ContainerdBinaries() {
		add(n, ContainerdVersion, ContainerdPath(n), "")
	}
	add("runc", RuncVersion, RuncPath(), "")
	for _, n := range CNIPlugins() {
		add(n, CNIPluginsVersion, filepath.Join(CNIPluginDir(), n), "")
	}
	for _, im := range Images() {
		add(im.Name, im.Ref[strings.LastIndexByte(im.Ref, ':')+1:], ImagePath(im.Name), im.Ref)
	}
	return ps
}

// Scan hashes the parts of Expected(etcdVersions) that exist under dir and
// returns them as a manifest, with the paths of the missing ones.
func Scan(dir string, etcdVersions []string) (Manifest, []string, error) {
	var m Manifest
	var missing []string
	for _, p := range Expected(etcdVersions) {
		sum, err := fileSHA256(filepath.Join(dir, p.Path))
		if errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, p.Path)
			continue
		}
		if err != nil {
			return Manifest{}, nil, err
		}
		p.SHA256 = sum
		m.Parts = append(m.Parts, p)
	}
	sort.SliceStable(m.Parts, func(i, j int) bool { return m.Parts[i].Path < m.Parts[j].Path })
	return m, missing, nil
}

// WriteManifest writes m as dir/parts.json through a temporary file and a
// rename, so a reader never sees half of it.
func WriteManifest(dir string, m Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	f, err := os.CreateTemp(dir, "."+ManifestFile+"-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Join(dir, ManifestFile), err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", f.Name(), err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", f.Name(), err)
	}
	return os.Rename(f.Name(), filepath.Join(dir, ManifestFile))
}

// ReadManifest reads dir/parts.json.
func ReadManifest(dir string) (Manifest, error) {
	p := filepath.Join(dir, ManifestFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return Manifest{}, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return Manifest{}, fmt.Errorf("reading %s: %w", p, err)
	}
	return m, nil
}

// Find returns the part with that path (relative, as in Part.Path).
func (m Manifest) Find(path string) (Part, bool) {
	for _, p := range m.Parts {
		if p.Path == path {
			return p, true
		}
	}
	return Part{}, false
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hashing %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
