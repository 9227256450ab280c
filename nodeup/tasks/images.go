package tasks

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/fsroot"
)

// ImagesStampDir holds one stamp per imported image archive, named by the
// archive's sha256 and listing the images it held ("<name> <manifest
// digest>" lines).
const ImagesStampDir = "/var/lib/nodeup/images"

// CRINamespace is the containerd namespace the kubelet's images live in.
const CRINamespace = "k8s.io"

// pinnedLabel keeps an image from the kubelet's image garbage collection.
const pinnedLabel = "io.cri-containerd.pinned=pinned"

// ImageImportID is the task ID of the import of an image asset.
func ImageImportID(asset string) string { return "image:" + asset }

// ImageImport imports an OCI image archive (an asset) into containerd's
// k8s.io namespace, pinned, so that pods can use it without a registry.
// Imports need the running containerd: on a root that is not a live
// systemd (an image being baked) the task does nothing, and the node's
// first boot run imports. A stamp keyed by the archive's sha256, and the
// images' manifests in containerd's content store, make re-runs cheap (no
// command runs when nothing is to import); a wiped containerd store is
// imported again.
type ImageImport struct {
	Asset *Asset
	// Ctr is the ctr binary; Socket containerd's socket.
	Ctr, Socket string
	// ContentDir is containerd's content store
	// (<root>/io.containerd.content.v1.content).
	ContentDir string
	Needs      []string
}

func (t *ImageImport) ID() string          { return ImageImportID(t.Asset.Name) }
func (t *ImageImport) Deps() []string      { return append([]string{AssetID(t.Asset.Name)}, t.Needs...) }
func (t *ImageImport) Phase() engine.Phase { return engine.PhaseBoot }
func (t *ImageImport) stampPath() string   { return path.Join(ImagesStampDir, t.Asset.SHA256) }

// ImageImportDiff is an import to run.
type ImageImportDiff struct {
	Asset   string
	Archive string
	Images  []string // names in the archive; empty in a dry run before the download
	Reason  string
}

func (d *ImageImportDiff) Render(w io.Writer) {
	fmt.Fprintf(w, "import %s into containerd namespace %s, pinned (%s)", d.Archive, CRINamespace, d.Reason)
	if len(d.Images) > 0 {
		fmt.Fprintf(w, ": %s", strings.Join(d.Images, " "))
	}
	fmt.Fprintln(w)
}

func (t *ImageImport) Find(ctx context.Context, env *engine.Env) (engine.Diff, error) {
	if env.Systemd == nil {
		return nil, nil
	}
	if t.Asset.Extract {
		return nil, &engine.Permanent{Err: fmt.Errorf("asset %s: an image archive is imported as it is; remove extract: true", t.Asset.Name)}
	}
	d := &ImageImportDiff{Asset: t.Asset.Name, Archive: t.Asset.CachePath()}
	stamp, err := env.FS.ReadFile(t.stampPath())
	switch {
	case errors.Is(err, fs.ErrNotExist):
		d.Reason = "not imported yet"
		if images, err := t.images(env); err == nil {
			for _, im := range images {
				d.Images = append(d.Images, im.Name)
			}
		} else if !env.DryRun {
			return nil, err
		}
		return d, nil
	case err != nil:
		return nil, err
	}
	images := parseStamp(stamp)
	for _, im := range images {
		if hex, ok := strings.CutPrefix(im.Digest, "sha256:"); !ok || !env.FS.Exists(path.Join(t.ContentDir, "blobs", "sha256", hex)) {
			d.Reason = im.Name + " missing from containerd's content store"
			for _, im := range images {
				d.Images = append(d.Images, im.Name)
			}
			return d, nil
		}
	}
	if len(images) == 0 {
		d.Reason = "unreadable stamp " + t.stampPath()
		return d, nil
	}
	return nil, nil
}

func parseStamp(b []byte) []OCIImage {
	var out []OCIImage
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			out = append(out, OCIImage{Name: f[0], Digest: f[1]})
		}
	}
	return out
}

func (t *ImageImport) Apply(ctx context.Context, env *engine.Env, _ engine.Diff) error {
	images, err := t.images(env)
	if err != nil {
		return err
	}
	archive, err := env.FS.Path(t.Asset.CachePath())
	if err != nil {
		return err
	}
	out, err := env.Exec.Run(ctx, t.Ctr, "--address", t.Socket, "-n", CRINamespace, "images", "import", "--label", pinnedLabel, archive)
	if err != nil {
		// containerd may still be starting: retried by the engine.
		return fmt.Errorf("importing image asset %s: %v: %s", t.Asset.Name, err, strings.TrimSpace(string(out)))
	}
	var stamp strings.Builder
	var names []string
	for _, im := range images {
		fmt.Fprintf(&stamp, "%s %s\n", im.Name, im.Digest)
		names = append(names, im.Name)
	}
	env.Log.Info("imported images", "asset", t.Asset.Name, "images", names)
	return env.FS.WriteFile(t.stampPath(), []byte(stamp.String()), 0o644, fsroot.RootOwner)
}

// images reads the images an OCI image-layout archive declares in its
// index.json.
func (t *ImageImport) images(env *engine.Env) ([]OCIImage, error) {
	p, err := env.FS.Path(t.Asset.CachePath())
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("image asset %s: %w", t.Asset.Name, err)
	}
	defer f.Close()
	images, err := OCIArchiveImages(f)
	if err != nil {
		return nil, &engine.Permanent{Err: fmt.Errorf("image asset %s (%s): %w", t.Asset.Name, t.Asset.CachePath(), err)}
	}
	return images, nil
}

// OCIImage is one image of an OCI image-layout archive.
type OCIImage struct {
	// Name is the name `ctr images import` gives it: the annotation
	// io.containerd.image.name, else a full reference in
	// org.opencontainers.image.ref.name.
	Name string
	// Digest is its manifest's (or index's) digest, "sha256:<hex>".
	Digest string
}

// OCIArchiveImages returns the named images in an OCI image-layout tar's
// index.json, sorted by name.
func OCIArchiveImages(r io.Reader) ([]OCIImage, error) {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, errors.New("not an OCI image layout archive: no index.json")
		}
		if err != nil {
			return nil, fmt.Errorf("reading the archive: %w", err)
		}
		if path.Clean(h.Name) != "index.json" {
			continue
		}
		var idx struct {
			Manifests []struct {
				Digest      string            `json:"digest"`
				Annotations map[string]string `json:"annotations"`
			} `json:"manifests"`
		}
		if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&idx); err != nil {
			return nil, fmt.Errorf("index.json: %w", err)
		}
		var images []OCIImage
		for _, m := range idx.Manifests {
			n := m.Annotations["io.containerd.image.name"]
			if ref := m.Annotations["org.opencontainers.image.ref.name"]; n == "" && strings.Contains(ref, "/") {
				// A full reference; a bare tag ("v1") names nothing
				// without ctr's --base-name.
				n = ref
			}
			if n == "" || slices.ContainsFunc(images, func(im OCIImage) bool { return im.Name == n }) {
				continue
			}
			if !strings.HasPrefix(m.Digest, "sha256:") {
				return nil, fmt.Errorf("index.json: image %s has digest %q, want sha256:<hex>", n, m.Digest)
			}
			images = append(images, OCIImage{Name: n, Digest: m.Digest})
		}
		if len(images) == 0 {
			return nil, errors.New("index.json names no image (annotation io.containerd.image.name)")
		}
		sort.Slice(images, func(i, j int) bool { return images[i].Name < images[j].Name })
		return images, nil
	}
}
