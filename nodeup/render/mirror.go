package render

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/kopsnode/agents/pkg/releases"
)

// maxHashFile bounds a .sha256 download: a digest and a file name.
const maxHashFile = 4 << 10

// ErrHashMismatch is wrapped when the mirror's hash of a file differs from
// the hash the version table pins.
var ErrHashMismatch = errors.New("sha256 differs from the version table's")

// FetchHashes reads <file URL>.sha256 from the mirror for every file and
// returns the hashes by mirror path. A missing or malformed .sha256 is an
// error naming its URL; a hash that differs from a file's table hash is an
// error naming the asset, the URL and both hashes.
func FetchHashes(ctx context.Context, client *http.Client, mirror string, files []releases.File) (map[string]string, error) {
	if client == nil {
		client = http.DefaultClient
	}
	out := map[string]string{}
	for _, f := range files {
		if _, done := out[f.Path]; done {
			continue
		}
		u := URL(mirror, f.Path) + releases.HashSuffix
		sum, err := fetchHash(ctx, client, u)
		if err != nil {
			return nil, fmt.Errorf("asset %s: %w", f.Asset, err)
		}
		if f.SHA256 != "" && sum != f.SHA256 {
			return nil, fmt.Errorf("asset %s: %s: %w: the mirror says %s, the table pins %s", f.Asset, URL(mirror, f.Path), ErrHashMismatch, sum, f.SHA256)
		}
		out[f.Path] = sum
	}
	return out, nil
}

func fetchHash(ctx context.Context, client *http.Client, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", fmt.Errorf("fetching %s: %w", u, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetching %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("fetching %s: %s (the mirror must publish every file's sha256 beside it)", u, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxHashFile+1))
	if err != nil {
		return "", fmt.Errorf("fetching %s: %w", u, err)
	}
	if len(b) > maxHashFile {
		return "", fmt.Errorf("%s: larger than %d bytes; not a .sha256 file", u, maxHashFile)
	}
	sum, err := releases.ParseHashFile(b)
	if err != nil {
		return "", fmt.Errorf("%s: %w", u, err)
	}
	return sum, nil
}
