package fsroot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// tempSuffix marks the temporary files and directories that atomic writes
// make beside their target: ".<name>.nodeup-<random digits>" (WriteFrom,
// MkdirTemp) and ".<name>.nodeup-link" (Symlink).
const tempSuffix = ".nodeup-"

// isTempOf reports whether name is a temporary of the target base name.
func isTempOf(name, base string) bool {
	rest, ok := strings.CutPrefix(name, "."+base+tempSuffix)
	if !ok || rest == "" {
		return false
	}
	if rest == "link" {
		return true
	}
	for _, c := range rest {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// RemoveStaleTemps removes the temporaries that earlier, interrupted atomic
// writes of the given paths left beside them (a kubeconfig's holds a
// private key). Call it before anything writes those paths in this run: it
// would remove a write in progress. It returns the paths it removed.
func (f *FS) RemoveStaleTemps(paths ...string) ([]string, error) {
	byDir := map[string][]string{}
	for _, p := range paths {
		hp, err := f.must(p)
		if err != nil {
			return nil, err
		}
		byDir[filepath.Dir(hp)] = append(byDir[filepath.Dir(hp)], filepath.Base(hp))
	}
	var removed []string
	var errs []error
	for dir, bases := range byDir {
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("looking for stale temporary files in %s: %w", dir, err))
			continue
		}
		for _, e := range entries {
			for _, b := range bases {
				if !isTempOf(e.Name(), b) {
					continue
				}
				hp := filepath.Join(dir, e.Name())
				if err := os.RemoveAll(hp); err != nil {
					errs = append(errs, fmt.Errorf("removing stale temporary %s: %w", hp, err))
					break
				}
				rel := hp
				if f.root != "/" {
					rel = "/" + strings.TrimPrefix(strings.TrimPrefix(hp, f.root), "/")
				}
				removed = append(removed, path.Clean(rel))
				break
			}
		}
	}
	sort.Strings(removed)
	return removed, errors.Join(errs...)
}
