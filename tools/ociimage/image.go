package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

// Media types and annotations of the OCI image spec and containerd.
const (
	mediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	mediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"

	// AnnotationImageName is the full reference containerd imports as.
	AnnotationImageName = "io.containerd.image.name"
	// AnnotationRefName is the OCI layout's reference (the tag, as docker
	// save and buildkit write it).
	AnnotationRefName = "org.opencontainers.image.ref.name"
)

// epoch is the time of every tar entry: fixed, so output is reproducible.
var epoch = time.Unix(0, 0).UTC()

// File is a host file placed in the image.
type File struct {
	Src string // path on the host
	Dst string // absolute path in the image
}

// Options describe the image.
type Options struct {
	Name       string   // reference, "registry.k8s.io/pause:3.10.1"
	Entrypoint []string // the process to run
	Arch       string   // GOARCH spelling, as the OCI spec uses it
	Files      []File
}

// The few OCI structures written here (image-spec v1.1), by hand so the
// module needs no dependency for them.
type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

type manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
}

type imageConfig struct {
	Created      string          `json:"created"`
	Architecture string          `json:"architecture"`
	OS           string          `json:"os"`
	Config       containerConfig `json:"config"`
	RootFS       rootFS          `json:"rootfs"`
}

type containerConfig struct {
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Env        []string `json:"Env,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
}

type rootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

// entry is one file of the image-layout tarball.
type entry struct {
	name string
	data []byte
}

type layout struct {
	ImageLayoutVersion string `json:"imageLayoutVersion"`
}

// Validate says what is wrong with the options, naming the flag.
func (o Options) Validate() error {
	var errs []error
	if _, tag, ok := splitRef(o.Name); !ok || tag == "" {
		errs = append(errs, fmt.Errorf("--name %q: want a reference with a tag, like registry.k8s.io/pause:3.10.1", o.Name))
	}
	if len(o.Entrypoint) == 0 || o.Entrypoint[0] == "" {
		errs = append(errs, errors.New("--entrypoint is required"))
	}
	if o.Arch == "" {
		errs = append(errs, errors.New("--arch is empty"))
	}
	if len(o.Files) == 0 {
		errs = append(errs, errors.New("--file: at least one file is required"))
	}
	seen := map[string]bool{}
	for _, f := range o.Files {
		if !path.IsAbs(f.Dst) || path.Clean(f.Dst) != f.Dst || f.Dst == "/" {
			errs = append(errs, fmt.Errorf("--file %s=%s: the destination must be a clean absolute file path", f.Src, f.Dst))
		}
		if seen[f.Dst] {
			errs = append(errs, fmt.Errorf("--file %s=%s: %s given twice", f.Src, f.Dst, f.Dst))
		}
		seen[f.Dst] = true
	}
	return errors.Join(errs...)
}

// splitRef splits "host/repo:tag" into repository and tag; a ':' inside the
// host part (a port) is not a tag separator.
func splitRef(ref string) (repo, tag string, ok bool) {
	i := strings.LastIndexByte(ref, ':')
	if i < 0 || strings.Contains(ref[i+1:], "/") {
		return ref, "", false
	}
	return ref[:i], ref[i+1:], ref[:i] != ""
}

// Write writes the image-layout tarball of the image to w.
func Write(w io.Writer, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	_, tag, _ := splitRef(o.Name)

	layerTar, err := buildLayer(o.Files)
	if err != nil {
		return err
	}
	diffID := digestOf(layerTar)
	layerGz, err := gzipBytes(layerTar)
	if err != nil {
		return err
	}
	cfg, err := json.Marshal(imageConfig{
		Created:      epoch.Format(time.RFC3339),
		Architecture: o.Arch,
		OS:           "linux",
		Config: containerConfig{
			Entrypoint: o.Entrypoint,
			Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			WorkingDir: "/",
		},
		RootFS: rootFS{Type: "layers", DiffIDs: []string{diffID}},
	})
	if err != nil {
		return err
	}
	man, err := json.Marshal(manifest{
		SchemaVersion: 2,
		MediaType:     mediaTypeManifest,
		Config:        descriptor{MediaType: mediaTypeConfig, Digest: digestOf(cfg), Size: int64(len(cfg))},
		Layers:        []descriptor{{MediaType: mediaTypeLayer, Digest: digestOf(layerGz), Size: int64(len(layerGz))}},
	})
	if err != nil {
		return err
	}
	idx, err := json.Marshal(index{
		SchemaVersion: 2,
		MediaType:     mediaTypeIndex,
		Manifests: []descriptor{{
			MediaType: mediaTypeManifest,
			Digest:    digestOf(man),
			Size:      int64(len(man)),
			Annotations: map[string]string{
				AnnotationImageName: o.Name,
				AnnotationRefName:   tag,
			},
			Platform: &platform{Architecture: o.Arch, OS: "linux"},
		}},
	})
	if err != nil {
		return err
	}
	lay, err := json.Marshal(layout{ImageLayoutVersion: "1.0.0"})
	if err != nil {
		return err
	}

	blobs := map[string][]byte{}
	for _, b := range [][]byte{layerGz, cfg, man} {
		blobs["blobs/sha256/"+strings.TrimPrefix(digestOf(b), "sha256:")] = b
	}
	tw := tar.NewWriter(w)
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(dirHeader(d)); err != nil {
			return err
		}
	}
	names := make([]string, 0, len(blobs))
	for n := range blobs {
		names = append(names, n)
	}
	sort.Strings(names)
	entries := make([]entry, 0, len(names)+2)
	for _, n := range names {
		entries = append(entries, entry{n, blobs[n]})
	}
	entries = append(entries, entry{"index.json", idx}, entry{"oci-layout", lay})
	for _, e := range entries {
		if err := tw.WriteHeader(fileHeader(e.name, 0o644, int64(len(e.data)))); err != nil {
			return err
		}
		if _, err := tw.Write(e.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// buildLayer makes the uncompressed layer: each file with its parent
// directories, sorted by path. Files keep their executable bit only.
func buildLayer(files []File) ([]byte, error) {
	type layerEntry struct {
		name string
		src  string // empty for a directory
	}
	dirs := map[string]bool{}
	var es []layerEntry
	for _, f := range files {
		rel := strings.TrimPrefix(f.Dst, "/")
		for d := path.Dir(rel); d != "."; d = path.Dir(d) {
			if !dirs[d] {
				dirs[d] = true
				es = append(es, layerEntry{name: d + "/"})
			}
		}
		es = append(es, layerEntry{name: rel, src: f.Src})
	}
	sort.Slice(es, func(i, j int) bool { return es[i].name < es[j].name })

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		if e.src == "" {
			if err := tw.WriteHeader(dirHeader(e.name)); err != nil {
				return nil, err
			}
			continue
		}
		data, err := os.ReadFile(e.src)
		if err != nil {
			return nil, fmt.Errorf("--file %s: %w", e.src, err)
		}
		st, err := os.Stat(e.src)
		if err != nil {
			return nil, fmt.Errorf("--file %s: %w", e.src, err)
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("--file %s: not a regular file", e.src)
		}
		mode := int64(0o644)
		if st.Mode().Perm()&0o111 != 0 {
			mode = 0o755
		}
		if err := tw.WriteHeader(fileHeader(e.name, mode, int64(len(data)))); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func dirHeader(name string) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: epoch}
}

func fileHeader(name string, mode, size int64) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: size, ModTime: epoch}
}

func gzipBytes(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	// No name and a zero ModTime in the gzip header: reproducible.
	zw, err := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}
