package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// readTar returns the entries of a tarball by name, failing on duplicates.
func readTar(t *testing.T, b []byte) (map[string][]byte, []*tar.Header) {
	t.Helper()
	files := map[string][]byte{}
	var hdrs []*tar.Header
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := files[h.Name]; dup {
			t.Fatalf("entry %s twice", h.Name)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = data
		hdrs = append(hdrs, h)
	}
	return files, hdrs
}

func testFiles(t *testing.T) []File {
	t.Helper()
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	data := filepath.Join(dir, "data.txt")
	if err := os.WriteFile(app, []byte("#!/bin/true\nbinary"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(data, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []File{{Src: app, Dst: "/app"}, {Src: data, Dst: "/etc/app/data.txt"}}
}

func build(t *testing.T, o Options) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, o); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// TestLayoutValid walks the layout as an importer does: oci-layout, then
// index.json to the manifest, config and layer, checking every digest and
// size against the content and the names containerd imports by.
func TestLayoutValid(t *testing.T) {
	o := Options{Name: "localhost:5000/kopsnode/testapp:v1", Entrypoint: []string{"/app"}, Arch: "amd64", Files: testFiles(t)}
	files, hdrs := readTar(t, build(t, o))

	var lay layout
	if err := json.Unmarshal(files["oci-layout"], &lay); err != nil || lay.ImageLayoutVersion != "1.0.0" {
		t.Fatalf("oci-layout %q: %v", files["oci-layout"], err)
	}
	// Every blob is named by the digest of its content.
	for name, data := range files {
		if strings.HasPrefix(name, "blobs/sha256/") && !strings.HasSuffix(name, "/") {
			if want := "blobs/sha256/" + strings.TrimPrefix(sha(data), "sha256:"); name != want {
				t.Errorf("blob %s has content of %s", name, want)
			}
		}
	}
	blob := func(d descriptor) []byte {
		t.Helper()
		b, ok := files["blobs/sha256/"+strings.TrimPrefix(d.Digest, "sha256:")]
		if !ok {
			t.Fatalf("blob %s missing", d.Digest)
		}
		if int64(len(b)) != d.Size || sha(b) != d.Digest {
			t.Fatalf("descriptor %s size %d does not match content (size %d)", d.Digest, d.Size, len(b))
		}
		return b
	}

	var idx index
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	if idx.SchemaVersion != 2 || idx.MediaType != mediaTypeIndex || len(idx.Manifests) != 1 {
		t.Fatalf("index: %+v", idx)
	}
	md := idx.Manifests[0]
	if md.Annotations[AnnotationImageName] != o.Name || md.Annotations[AnnotationRefName] != "v1" {
		t.Errorf("annotations %v, want %s=%s and %s=v1", md.Annotations, AnnotationImageName, o.Name, AnnotationRefName)
	}
	if md.Platform == nil || md.Platform.Architecture != "amd64" || md.Platform.OS != "linux" {
		t.Errorf("platform %+v", md.Platform)
	}
	var man manifest
	if err := json.Unmarshal(blob(md), &man); err != nil {
		t.Fatal(err)
	}
	if man.MediaType != mediaTypeManifest || man.Config.MediaType != mediaTypeConfig || len(man.Layers) != 1 || man.Layers[0].MediaType != mediaTypeLayer {
		t.Fatalf("manifest: %+v", man)
	}
	var cfg imageConfig
	if err := json.Unmarshal(blob(man.Config), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" || len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != "/app" {
		t.Errorf("config: %+v", cfg)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob(man.Layers[0])))
	if err != nil {
		t.Fatal(err)
	}
	layer, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != sha(layer) {
		t.Errorf("diff_ids %v, uncompressed layer is %s", cfg.RootFS.DiffIDs, sha(layer))
	}
	lf, lh := readTar(t, layer)
	if string(lf["app"]) != "#!/bin/true\nbinary" || string(lf["etc/app/data.txt"]) != "hello" {
		t.Errorf("layer files: %v", lf)
	}
	var names []string
	for _, h := range lh {
		names = append(names, h.Name)
		switch h.Name {
		case "app":
			if h.Mode != 0o755 {
				t.Errorf("app mode %o, want 755 (executable source)", h.Mode)
			}
		case "etc/app/data.txt":
			if h.Mode != 0o644 {
				t.Errorf("data.txt mode %o, want 644", h.Mode)
			}
		}
	}
	if got := strings.Join(names, " "); got != "app etc/ etc/app/ etc/app/data.txt" {
		t.Errorf("layer entries %q, want parents first, sorted", got)
	}
	for _, h := range append(hdrs, lh...) {
		if !h.ModTime.Equal(epoch) || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: mtime %v uid %d gid %d, want fixed", h.Name, h.ModTime, h.Uid, h.Gid)
		}
	}
}

// TestDeterministic: the same inputs give the same bytes, whatever the
// source files' times and order of the flags.
func TestDeterministic(t *testing.T) {
	fs := testFiles(t)
	o := Options{Name: "registry.k8s.io/pause:3.10.1", Entrypoint: []string{"/app"}, Arch: "amd64", Files: fs}
	a := build(t, o)
	later := time.Now().Add(time.Hour)
	for _, f := range fs {
		if err := os.Chtimes(f.Src, later, later); err != nil {
			t.Fatal(err)
		}
	}
	o.Files = []File{fs[1], fs[0]}
	b := build(t, o)
	if !bytes.Equal(a, b) {
		t.Fatal("two builds of the same image differ")
	}
	o.Name = "registry.k8s.io/pause:3.10.2"
	if bytes.Equal(a, build(t, o)) {
		t.Fatal("a different name gave the same tarball")
	}
}

func TestValidate(t *testing.T) {
	fs := testFiles(t)
	good := Options{Name: "registry.k8s.io/pause:3.10.1", Entrypoint: []string{"/app"}, Arch: "amd64", Files: fs}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		mut  func(*Options)
		want string
	}{
		"no tag":        {func(o *Options) { o.Name = "localhost:5000/app" }, "--name"},
		"empty name":    {func(o *Options) { o.Name = "" }, "--name"},
		"no entrypoint": {func(o *Options) { o.Entrypoint = nil }, "--entrypoint"},
		"no files":      {func(o *Options) { o.Files = nil }, "--file"},
		"relative dst":  {func(o *Options) { o.Files = []File{{Src: fs[0].Src, Dst: "app"}} }, "clean absolute"},
		"dst twice":     {func(o *Options) { o.Files = []File{fs[0], fs[0]} }, "given twice"},
		"root dst":      {func(o *Options) { o.Files = []File{{Src: fs[0].Src, Dst: "/"}} }, "clean absolute"},
		"unclean dst":   {func(o *Options) { o.Files = []File{{Src: fs[0].Src, Dst: "/a/../app"}} }, "clean absolute"},
		"missing arch":  {func(o *Options) { o.Arch = "" }, "--arch"},
		"tag only":      {func(o *Options) { o.Name = ":v1" }, "--name"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			o := good
			c.mut(&o)
			err := o.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one naming %q", err, c.want)
			}
		})
	}
	o := good
	o.Files = []File{{Src: filepath.Join(t.TempDir(), "nope"), Dst: "/x"}}
	if err := Write(io.Discard, o); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("missing source: %v, want an error naming it", err)
	}
}

// TestRunWritesAtomically: the command writes the tarball in place and
// leaves no temporary file beside it.
func TestRunWritesAtomically(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "img.tar")
	o := Options{Name: "registry.k8s.io/pause:3.10.1", Entrypoint: []string{"/app"}, Arch: "amd64", Files: testFiles(t)}
	if err := run(o, out); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, build(t, o)) {
		t.Fatal("run wrote other bytes than Write")
	}
	o.Entrypoint = nil
	if err := run(o, out); err == nil {
		t.Fatal("run accepted options without an entrypoint")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("directory holds %d entries, want only img.tar", len(ents))
	}
}
