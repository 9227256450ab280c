// Package releases is the version table of the suite: for each supported
// Kubernetes version, the versions of the parts a node runs with it
// (containerd, runc, the CNI plugins, the pause and CoreDNS images, the etcd
// versions allowed), and where each file lives under a release mirror's base
// URL. `nodeup render` pins node configurations from it; a mirror is laid
// out with MirrorLayout and WriteMirrorFile. docs/cluster-render.md shows
// the layout.
package releases

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Arch is the only architecture the table covers.
const Arch = "amd64"

// HashSuffix is appended to a file's URL to get its published sha256
// (dl.k8s.io's convention).
const HashSuffix = ".sha256"

// Image is an OCI image tarball of the table.
type Image struct {
	// Name is the tarball's name on the mirror (images/<Name>-<Version>.tar)
	// and the node configuration's asset name (image-<Name>).
	Name    string
	Version string
	// Ref is the reference the tarball's image is imported as.
	Ref string
}

// Release is one row of the table: a Kubernetes version and the versions of
// the parts that go with it.
type Release struct {
	Kubernetes string // "1.37.2", without "v"
	Containerd string
	Runc       string
	CNIPlugins string
	Pause      Image
	CoreDNS    Image
	// Etcd lists the etcd versions a cluster of this release may run.
	Etcd []string
	// SHA256 optionally pins files by their mirror path; a mirror that
	// publishes a different hash for one of them is refused.
	SHA256 map[string]string
}

// Table returns the supported releases, oldest first. The versions are the
// ones tools/build-test-tools.sh builds (pkg/testtools/parts; a test keeps
// them equal), so the test mirror can serve every file. The table carries
// no hashes: those binaries are built here, so the mirror's .sha256 files
// are the source.
func Table() []Release {
	return []Release{{
		Kubernetes: "1.37.2",
		Containerd: "2.4.2",
		Runc:       "1.4.4",
		CNIPlugins: "1.10.0",
		Pause:      Image{Name: "pause", Version: "3.10.1", Ref: "registry.k8s.io/pause:3.10.1"},
		CoreDNS:    Image{Name: "coredns", Version: "1.15.0", Ref: "registry.k8s.io/coredns/coredns:v1.15.0"},
		Etcd:       []string{"3.5.21", "3.6.16", "3.7.3"},
	}}
}

// Newest returns the newest release of the table (its last row).
func Newest() Release {
	t := Table()
	return t[len(t)-1]
}

// Supported returns the Kubernetes versions of a table.
func Supported(table []Release) []string {
	var vs []string
	for _, r := range table {
		vs = append(vs, r.Kubernetes)
	}
	return vs
}

// ErrUnsupported is wrapped by Lookup's error for a version not in the table.
var ErrUnsupported = errors.New("not in the version table")

// Lookup returns the release of a Kubernetes version ("1.37.2" or
// "v1.37.2"). A version not in the table is an error listing the
// supported ones.
func Lookup(table []Release, kubernetesVersion string) (Release, error) {
	v := strings.TrimPrefix(kubernetesVersion, "v")
	for _, r := range table {
		if r.Kubernetes == v {
			return r, nil
		}
	}
	return Release{}, fmt.Errorf("Kubernetes %q is %w (supported: %s)", kubernetesVersion, ErrUnsupported, strings.Join(Supported(table), ", "))
}

// AllowsEtcd reports whether the release may run etcd version v.
func (r Release) AllowsEtcd(v string) bool { return slices.Contains(r.Etcd, v) }

// Part is one file a mirror is built from: a binary or an image tarball.
type Part struct {
	// Component is "kubernetes", "containerd", "runc", "cni-plugins",
	// "etcd", "image" or "kopsnode".
	Component string
	// Name is the binary's or image's name ("kubelet", "ctr", "bridge",
	// "etcd", "pause", "protokube").
	Name    string
	Version string
}

func (p Part) String() string { return p.Component + "/" + p.Name + "@" + p.Version }

// Member is a file inside an archive.
type Member struct {
	Path string // path inside the archive ("bin/ctr", "./bridge")
	Part Part
}

// File is one file of a release mirror and the node configuration asset it
// becomes.
type File struct {
	// Asset is the node configuration's asset name ("kubelet",
	// "containerd", "etcd-3.6.16", "image-pause").
	Asset string
	// Path is relative to the mirror's base URL, slash-separated.
	Path string
	// Extract says the file is a .tar.gz of Members; otherwise it is Part.
	Extract bool
	Members []Member
	Part    Part
	// ControlPlane marks files only control-plane nodes download.
	ControlPlane bool
	// SHA256 is the table's pinned hash, if any.
	SHA256 string
}

// NodeupFile is the nodeup binary of a kopsnode release, which the
// userdata downloads (it is not a node configuration asset).
func NodeupFile(kopsnodeVersion string) File {
	return kopsnodeFile("nodeup", kopsnodeVersion, false)
}

func kopsnodeFile(name, version string, controlPlane bool) File {
	return File{Asset: name, Path: path.Join("kopsnode", version, name), Part: Part{Component: "kopsnode", Name: name, Version: version}, ControlPlane: controlPlane}
}

// EtcdAssetPrefix starts the asset name of an etcd binary (etcd-<version>).
const EtcdAssetPrefix = "etcd-"

// EtcdutlAssetPrefix starts the asset name of an etcdutl binary
// (etcdutl-<version>), which etcd-manager restores snapshots with.
const EtcdutlAssetPrefix = "etcdutl-"

// ImageAssetPrefix starts the asset name of an image tarball.
const ImageAssetPrefix = "image-"

// ImageFile is an image tarball on the mirror: images/<name>-<version>.tar,
// or images/<name>.tar for an image without a version in the table (a
// cluster's additional images).
func ImageFile(im Image) File {
	base := im.Name
	if im.Version != "" {
		base += "-" + im.Version
	}
	return File{Asset: ImageAssetPrefix + im.Name, Path: path.Join("images", base+".tar"), Part: Part{Component: "image", Name: im.Name, Version: im.Version}}
}

var kopsnodeVersionRE = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$`)

// Files returns the files nodes of this release download: the node's own
// and, marked ControlPlane, the control plane's, with etcd and etcdutl at each of
// etcdVersions (which the release must allow), kopsnode's protokube and
// etcd-manager at kopsnodeVersion, and the images. Each path is relative
// to the mirror base.
func (r Release) Files(kopsnodeVersion string, etcdVersions []string) ([]File, error) {
	if !kopsnodeVersionRE.MatchString(kopsnodeVersion) {
		return nil, fmt.Errorf("kopsnode version %q is not a release version", kopsnodeVersion)
	}
	k8s := func(name string, controlPlane bool) File {
		return File{Asset: name, Path: path.Join("kubernetes", "v"+r.Kubernetes, "bin", "linux", Arch, name),
			Part: Part{Component: "kubernetes", Name: name, Version: r.Kubernetes}, ControlPlane: controlPlane}
	}
	files := []File{
		k8s("kubelet", false),
		k8s("kube-proxy", false),
		{Asset: "containerd", Path: path.Join("containerd", "v"+r.Containerd, fmt.Sprintf("containerd-%s-linux-%s.tar.gz", r.Containerd, Arch)), Extract: true,
			Members: members(r.Containerd, "containerd", "bin/", "containerd", "containerd-shim-runc-v2", "ctr")},
		{Asset: "runc", Path: path.Join("runc", "v"+r.Runc, "runc."+Arch), Part: Part{Component: "runc", Name: "runc", Version: r.Runc}},
		{Asset: "cni-plugins", Path: path.Join("cni-plugins", "v"+r.CNIPlugins, fmt.Sprintf("cni-plugins-linux-%s-v%s.tgz", Arch, r.CNIPlugins)), Extract: true,
			Members: members(r.CNIPlugins, "cni-plugins", "./", "bridge", "host-local", "loopback", "portmap", "ptp")},
		ImageFile(r.Pause),
		ImageFile(r.CoreDNS),
		kopsnodeFile("protokube", kopsnodeVersion, false),
		k8s("kube-apiserver", true),
		k8s("kube-controller-manager", true),
		k8s("kube-scheduler", true),
		k8s("kubectl", true),
		kopsnodeFile("etcd-manager", kopsnodeVersion, true),
	}
	var seen []string
	for _, v := range etcdVersions {
		if slices.Contains(seen, v) {
			continue
		}
		seen = append(seen, v)
		if !r.AllowsEtcd(v) {
			return nil, fmt.Errorf("etcd %q is not allowed with Kubernetes %s (allowed: %s)", v, r.Kubernetes, strings.Join(r.Etcd, ", "))
		}
		files = append(files,
			File{Asset: EtcdAssetPrefix + v, Path: path.Join("etcd", "v"+v, "etcd"), Part: Part{Component: "etcd", Name: "etcd", Version: v}, ControlPlane: true},
			File{Asset: EtcdutlAssetPrefix + v, Path: path.Join("etcd", "v"+v, "etcdutl"), Part: Part{Component: "etcd", Name: "etcdutl", Version: v}, ControlPlane: true})
	}
	for i := range files {
		files[i].SHA256 = r.SHA256[files[i].Path]
	}
	return files, nil
}

func members(version, component, dir string, names ...string) []Member {
	var ms []Member
	for _, n := range names {
		ms = append(ms, Member{Path: dir + n, Part: Part{Component: component, Name: n, Version: version}})
	}
	return ms
}

// MirrorLayout returns every file a mirror must hold to serve a release
// at kopsnodeVersion: Files for every etcd version the release allows, and
// nodeup. Each needs its .sha256 beside it (WriteMirrorFile writes both).
func MirrorLayout(r Release, kopsnodeVersion string) ([]File, error) {
	files, err := r.Files(kopsnodeVersion, r.Etcd)
	if err != nil {
		return nil, err
	}
	return append(files, NodeupFile(kopsnodeVersion)), nil
}

// HashFileContent is the content of a .sha256 file: the hex digest, two
// spaces and the file's base name (sha256sum's format).
func HashFileContent(sum, filePath string) []byte {
	return []byte(sum + "  " + path.Base(filePath) + "\n")
}

var hexSHA256RE = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

// ParseHashFile reads a .sha256 file: a hex digest, optionally followed by
// whitespace and a file name. It returns the digest in lower case.
func ParseHashFile(data []byte) (string, error) {
	fields := strings.Fields(string(data))
	if len(fields) == 0 {
		return "", errors.New("empty: want a hex sha256")
	}
	if !hexSHA256RE.MatchString(fields[0]) || len(fields) > 2 {
		s := string(data)
		if len(s) > 80 {
			s = s[:80] + "..."
		}
		return "", fmt.Errorf("%q is not a hex sha256 optionally followed by a file name", s)
	}
	return strings.ToLower(fields[0]), nil
}

// MirrorContents returns every file of a mirror of files by its path
// relative to the base, and its .sha256 beside it: each file from source
// (archives built from their members' parts, deterministically, so the same
// parts give the same hash). Tests serve the map; WriteMirror writes it.
func MirrorContents(files []File, source func(Part) ([]byte, error)) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, f := range files {
		data, err := build(f, source)
		if err != nil {
			return nil, fmt.Errorf("mirror file %s: %w", f.Path, err)
		}
		sum := sha256.Sum256(data)
		out[f.Path] = data
		out[f.Path+HashSuffix] = HashFileContent(hex.EncodeToString(sum[:]), f.Path)
	}
	return out, nil
}

// WriteMirror lays out dir as a release mirror of files (MirrorContents);
// serve dir with an HTTP file server.
func WriteMirror(dir string, files []File, source func(Part) ([]byte, error)) error {
	contents, err := MirrorContents(files, source)
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := WriteMirrorFile(dir, f.Path, contents[f.Path]); err != nil {
			return err
		}
	}
	return nil
}

func build(f File, source func(Part) ([]byte, error)) ([]byte, error) {
	if !f.Extract {
		return source(f.Part)
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, m := range f.Members {
		data, err := source(m.Part)
		if err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Name: m.Path, Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteMirrorFile writes data at dir/<rel> and its sha256 at
// dir/<rel>.sha256, creating directories; rel is a File's Path.
func WriteMirrorFile(dir, rel string, data []byte) error {
	if path.IsAbs(rel) || path.Clean(rel) != rel || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("mirror file %q: not a clean relative path", rel)
	}
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	return os.WriteFile(p+HashSuffix, HashFileContent(hex.EncodeToString(sum[:]), rel), 0o644)
}
