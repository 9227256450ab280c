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
// archive's sha256 and listing the image names it held.
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
// first boot run imports. A stamp keyed by the archive's sha256 makes
// re-runs cheap; on a live node the names are also checked with
// `ctr images ls` so that a wiped containerd store is re-imported.
type ImageImport struct {
	Asset *Asset
	// Ctr is the ctr binary; Socket containerd's socket.
	Ctr, Socket string
	Needs       []string
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
		if names, err := t.names(env); err == nil {
			d.Images = names
		} else if !env.DryRun {
			return nil, err
		}
		return d, nil
	case err != nil:
		return nil, err
	}
	names := strings.Fields(string(stamp))
	if env.DryRun {
		return nil, nil
	}
	out, err := env.Exec.Run(ctx, t.Ctr, "--address", t.Socket, "-n", CRINamespace, "images", "ls", "-q")
	if err != nil {
		return nil, fmt.Errorf("listing containerd images: %v: %s", err, strings.TrimSpace(string(out)))
	}
	have := strings.Fields(string(out))
	for _, n := range names {
		if !slices.Contains(have, n) {
			d.Reason = n + " missing from containerd"
			d.Images = names
			return d, nil
		}
	}
	return nil, nil
}

func (t *ImageImport) Apply(ctx context.Context, env *engine.Env, _ engine.Diff) error {
	names, err := t.names(env)
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
	env.Log.Info("imported images", "asset", t.Asset.Name, "images", names)
	return env.FS.WriteFile(t.stampPath(), []byte(strings.Join(names, "\n")+"\n"), 0o644, fsroot.RootOwner)
}

// names reads the image names an OCI image-layout archive declares in its
// index.json (annotation io.containerd.image.name, else
// org.opencontainers.image.ref.name), the names `ctr images import` gives.
func (t *ImageImport) names(env *engine.Env) ([]string, error) {
	p, err := env.FS.Path(t.Asset.CachePath())
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("image asset %s: %w", t.Asset.Name, err)
	}
	defer f.Close()
	names, err := OCIArchiveImageNames(f)
	if err != nil {
		return nil, &engine.Permanent{Err: fmt.Errorf("image asset %s (%s): %w", t.Asset.Name, t.Asset.CachePath(), err)}
	}
	return names, nil
}

// OCIArchiveImageNames returns the image names in an OCI image-layout tar's
// index.json, sorted.
func OCIArchiveImageNames(r io.Reader) ([]string, error) {
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
				Annotations map[string]string `json:"annotations"`
			} `json:"manifests"`
		}
		if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&idx); err != nil {
			return nil, fmt.Errorf("index.json: %w", err)
		}
		var names []string
		for _, m := range idx.Manifests {
			n := m.Annotations["io.containerd.image.name"]
			if ref := m.Annotations["org.opencontainers.image.ref.name"]; n == "" && strings.Contains(ref, "/") {
				// A full reference; a bare tag ("v1") names nothing
				// without ctr's --base-name.
				n = ref
			}
			if n != "" && !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			return nil, errors.New("index.json names no image (annotation io.containerd.image.name)")
		}
		sort.Strings(names)
		return names, nil
	}
}
