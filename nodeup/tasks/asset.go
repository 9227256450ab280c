package tasks

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/net/http/httpproxy"

	"github.com/kopsnode/agents/nodeup/engine"
	"github.com/kopsnode/agents/nodeup/fsroot"
)

// CacheDir is where verified assets are kept, keyed by sha256.
const CacheDir = "/var/cache/nodeup/assets"

// AssetID is the task ID of the asset with the given name.
func AssetID(name string) string { return "asset:" + name }

// Asset downloads a file pinned by sha256 from mirrors, in order, into the
// cache. An archive (Extract) is unpacked into <sha256>.d atomically.
type Asset struct {
	Name    string
	SHA256  string
	URLs    []string
	Extract bool
	// Deadline for every attempt on every mirror (default: engine's).
	Deadline time.Duration
}

func (t *Asset) ID() string             { return AssetID(t.Name) }
func (t *Asset) Deps() []string         { return nil }
func (t *Asset) Phase() engine.Phase    { return engine.PhaseBake }
func (t *Asset) Timeout() time.Duration { return t.Deadline }
func (t *Asset) archivePath() string    { return path.Join(CacheDir, t.SHA256) }
func (t *Asset) extractedPath() string  { return path.Join(CacheDir, t.SHA256+".d") }

// CachePath is where the asset's content is once the task converged: the
// file itself, or the directory it was extracted into.
func (t *Asset) CachePath() string {
	if t.Extract {
		return t.extractedPath()
	}
	return t.archivePath()
}

// AssetDiff says what the asset task will do.
type AssetDiff struct {
	Name     string
	URLs     []string
	Path     string
	Download bool
	Extract  string // directory to extract into, "" when not an archive
}

func (d *AssetDiff) Render(w io.Writer) {
	if d.Download {
		fmt.Fprintf(w, "download %s -> %s\n", d.URLs[0], d.Path)
		for _, u := range d.URLs[1:] {
			fmt.Fprintf(w, "  (fallback mirror %s)\n", u)
		}
	}
	if d.Extract != "" {
		fmt.Fprintf(w, "extract %s -> %s\n", d.Path, d.Extract)
	}
}

func (t *Asset) Find(ctx context.Context, env *engine.Env) (engine.Diff, error) {
	if len(t.URLs) == 0 {
		return nil, &engine.Permanent{Err: fmt.Errorf("asset %s has no URLs", t.Name)}
	}
	d := &AssetDiff{Name: t.Name, URLs: t.URLs, Path: t.archivePath()}
	// A cache entry only appears by rename after verification, so its
	// presence is proof of its hash.
	if t.Extract {
		if env.FS.Exists(t.extractedPath()) {
			return nil, nil
		}
		d.Extract = t.extractedPath()
	}
	d.Download = !env.FS.Exists(t.archivePath())
	if !d.Download && d.Extract == "" {
		return nil, nil
	}
	return d, nil
}

// HashMismatchError is a download whose content did not match the pin.
type HashMismatchError struct {
	URL, Expected, Actual string
}

func (e *HashMismatchError) Error() string {
	return fmt.Sprintf("sha256 mismatch for %s: expected %s, got %s", e.URL, e.Expected, e.Actual)
}

func (t *Asset) Apply(ctx context.Context, env *engine.Env, diff engine.Diff) error {
	d := diff.(*AssetDiff)
	if d.Download {
		var errs []error
		mismatches := 0
		ok := false
		for _, u := range t.URLs {
			err := t.fetch(ctx, env, u)
			if err == nil {
				ok = true
				break
			}
			var hm *HashMismatchError
			if errors.As(err, &hm) {
				mismatches++
			}
			env.Log.Warn("asset download failed, trying the next mirror", "asset", t.Name, "url", u, "error", err)
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
		if !ok {
			err := fmt.Errorf("downloading asset %s: %w", t.Name, errors.Join(errs...))
			if mismatches == len(t.URLs) {
				return &engine.Permanent{Err: err}
			}
			return err
		}
	}
	if t.Extract {
		return t.extract(env)
	}
	return nil
}

func (t *Asset) fetch(ctx context.Context, env *engine.Env, url string) error {
	timeout := env.AttemptTimeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var body io.ReadCloser
	switch {
	case strings.HasPrefix(url, "file://"):
		f, err := os.Open(strings.TrimPrefix(url, "file://"))
		if err != nil {
			return fmt.Errorf("opening %s: %w", url, err)
		}
		body = f
	case strings.HasPrefix(url, "s3://") || strings.HasPrefix(url, "gs://"):
		if env.OpenObject == nil {
			return fmt.Errorf("reading %s: no access to buckets in this run", url)
		}
		rc, err := env.OpenObject(actx, url)
		if err != nil {
			return fmt.Errorf("reading %s: %w", url, err)
		}
		body = rc
	default:
		req, err := http.NewRequestWithContext(actx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("GET %s: %w", url, err)
		}
		client := env.HTTP
		if client == nil {
			client = DefaultHTTPClient()
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("GET %s: %w", url, err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		body = resp.Body
	}
	defer body.Close()
	h := sha256.New()
	var hm *HashMismatchError
	err := env.FS.WriteFrom(t.archivePath(), &verifyingReader{r: io.TeeReader(body, h), done: func() error {
		got := hex.EncodeToString(h.Sum(nil))
		if !strings.EqualFold(got, t.SHA256) {
			hm = &HashMismatchError{URL: url, Expected: t.SHA256, Actual: got}
			return hm
		}
		return nil
	}}, 0o644, fsroot.RootOwner)
	if hm != nil {
		return hm
	}
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}

// verifyingReader calls done at EOF and turns its error into a read error,
// so that an atomic write of a mismatching download never reaches rename.
type verifyingReader struct {
	r    io.Reader
	done func() error
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	if err == io.EOF {
		if derr := v.done(); derr != nil {
			return n, derr
		}
	}
	return n, err
}

func (t *Asset) extract(env *engine.Env) error {
	tmp, err := env.FS.MkdirTemp(t.extractedPath())
	if err != nil {
		return err
	}
	if err := extractTarGz(env.FS, t.archivePath(), tmp); err != nil {
		env.FS.RemoveAll(tmp)
		return &engine.Permanent{Err: fmt.Errorf("extracting asset %s (%s): %w", t.Name, t.archivePath(), err)}
	}
	if err := env.FS.Rename(tmp, t.extractedPath()); err != nil {
		env.FS.RemoveAll(tmp)
		return err
	}
	return nil
}

func extractTarGz(f *fsroot.FS, archive, dir string) error {
	fh, err := f.Open(archive)
	if err != nil {
		return err
	}
	defer fh.Close()
	gz, err := gzip.NewReader(fh)
	if err != nil {
		return err
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := path.Clean("/" + h.Name)
		if name == "/" {
			continue
		}
		target := path.Join(dir, name)
		hp, err := f.Path(target)
		if err != nil {
			return err
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(hp, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(hp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fs.FileMode(h.Mode).Perm())
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, tr); err != nil {
				out.Close()
				return err
			}
			if err := out.Sync(); err != nil {
				out.Close()
				return err
			}
			if err := out.Close(); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if strings.HasPrefix(h.Linkname, "/") || strings.Contains(h.Linkname, "..") {
				return fmt.Errorf("refusing symlink %s -> %s leaving the archive", h.Name, h.Linkname)
			}
			if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(h.Linkname, hp); err != nil {
				return err
			}
		default:
			// Devices, hard links and the like have no place in an asset.
		}
	}
}

// DefaultHTTPClient takes its proxy from the environment as it is when
// called (HTTP_PROXY, HTTPS_PROXY, NO_PROXY, as http.ProxyFromEnvironment,
// which caches the environment of the process's first request) and bounds
// connection setup; per-attempt deadlines come from the request context.
func DefaultHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	proxy := httpproxy.FromEnvironment().ProxyFunc()
	tr.Proxy = func(r *http.Request) (*url.URL, error) { return proxy(r.URL) }
	tr.ResponseHeaderTimeout = 30 * time.Second
	return &http.Client{Transport: tr}
}
