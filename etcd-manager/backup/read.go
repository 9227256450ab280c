package backup

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/store"
)

// Listing is what List finds under FullPrefix.
type Listing struct {
	// Backups are the complete backups, newest first.
	Backups []Meta `json:"backups"`
	// Incomplete are names with a data object but no meta object: a backup
	// in progress, or one that failed and could not be cleaned up.
	Incomplete []string `json:"incomplete,omitempty"`
	// Invalid are backups whose meta object does not parse or validate.
	Invalid []Invalid `json:"invalid,omitempty"`
}

// Invalid is a backup whose meta object is unusable.
type Invalid struct {
	Name  string `json:"name"`
	Error string `json:"error"`
}

// List returns the full backups, newest first, with their meta. Backups
// without meta are listed as incomplete and those whose meta is unusable
// as invalid; neither is ever used for a restore.
func List(ctx context.Context, st store.Store, l control.Layout) (Listing, error) {
	infos, err := st.List(ctx, FullPrefix(l))
	if err != nil {
		return Listing{}, fmt.Errorf("listing backups: %w", err)
	}
	hasMeta, hasData := map[string]bool{}, map[string]bool{}
	var names []string
	for _, i := range infos {
		name, file, ok := splitKey(l, i.Key)
		if !ok || ValidateName(name) != nil {
			continue
		}
		if !hasMeta[name] && !hasData[name] {
			names = append(names, name)
		}
		switch file {
		case metaFile:
			hasMeta[name] = true
		case dataFile:
			hasData[name] = true
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(names)))
	var out Listing
	for _, name := range names {
		if !hasMeta[name] {
			out.Incomplete = append(out.Incomplete, name)
			continue
		}
		m, err := ReadMeta(ctx, st, l, name)
		if err != nil {
			var se *store.Error
			switch {
			case errors.Is(err, ErrNoBackup):
				// Deleted since the listing.
				continue
			case errors.As(err, &se):
				// The store failed, not the object: no partial answer.
				return Listing{}, err
			}
			out.Invalid = append(out.Invalid, Invalid{Name: name, Error: err.Error()})
			continue
		}
		out.Backups = append(out.Backups, m)
	}
	if out.Backups == nil {
		out.Backups = []Meta{}
	}
	return out, nil
}

// Read fetches backup name into the file dst: the stored object is
// streamed, decompressed into dst and hashed; its size and sha256 must
// match the meta, and the decompressed snapshot must carry etcd's own
// correct hash. Only then does Read return nil; on any failure dst is
// removed and the error names the object and what differed. dst holds
// etcd's snapshot format (database plus sha256), as `etcdctl snapshot
// save` writes it.
func Read(ctx context.Context, st store.Store, l control.Layout, name, dst string) (Meta, error) {
	m, err := ReadMeta(ctx, st, l, name)
	if err != nil {
		return Meta{}, err
	}
	url := store.JoinURL(st.URL(), m.Object)
	if err := readInto(ctx, st, m, url, dst); err != nil {
		os.Remove(dst)
		return Meta{}, err
	}
	return m, nil
}

func readInto(ctx context.Context, st store.Store, m Meta, url, dst string) error {
	rc, _, err := st.Open(ctx, m.Object)
	if err != nil {
		return fmt.Errorf("reading backup %s: %w", m.Name, err)
	}
	defer rc.Close()
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("reading backup %s: %w", m.Name, err)
	}
	defer f.Close()
	h := sha256.New()
	n := &counter{}
	src := io.TeeReader(store.ContextReader(ctx, rc), io.MultiWriter(h, n))
	gz, gzErr := gzip.NewReader(src)
	var copyErr error
	if gzErr == nil {
		split := newDBSplitter(io.Discard)
		if _, copyErr = io.Copy(io.MultiWriter(f, split), gz); copyErr == nil {
			// Read whatever follows the gzip stream, so the hash covers
			// the whole object.
			_, copyErr = io.Copy(io.Discard, src)
		}
		if copyErr == nil {
			if _, err := split.check(); err != nil {
				copyErr = err
			}
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("reading backup %s: %w", m.Name, ctx.Err())
	}
	// The stored bytes are checked first: a damaged object is reported as
	// such, whatever decompressing it did.
	if _, err := io.Copy(io.Discard, src); err != nil {
		return fmt.Errorf("reading %s: %w", url, err)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if got != m.StoredSHA256 || n.n != m.StoredSize {
		return fmt.Errorf("%w: backup object %s has sha256 %s (%d bytes) but its meta says %s (%d bytes)", ErrIntegrity, url, got, n.n, m.StoredSHA256, m.StoredSize)
	}
	if gzErr != nil {
		return fmt.Errorf("decompressing %s: %w", url, gzErr)
	}
	if copyErr != nil {
		return fmt.Errorf("decompressing %s: %w", url, copyErr)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", dst, err)
	}
	return f.Close()
}

// ExtractDB writes the database part of a snapshot file (without etcd's
// trailing hash, which Read has checked) to dst, for Inspect or a restore.
func ExtractDB(snapshot, dst string) error {
	fi, err := os.Stat(snapshot)
	if err != nil {
		return err
	}
	if fi.Size() <= sha256.Size {
		return fmt.Errorf("snapshot %s is only %d bytes", snapshot, fi.Size())
	}
	in, err := os.Open(snapshot)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, io.LimitReader(in, fi.Size()-sha256.Size)); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
