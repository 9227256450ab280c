// Package backup takes full backups of an etcd cluster into the state store
// and reads them back. It is the one home of the backup layout, the meta
// object and the take, list and read functions; the manager decides when to
// call them.
//
// Layout, below <cluster>/backups/etcd/<etcd-cluster>/ (control.Layout's
// BackupsPrefix; control/ beside it is the control area):
//
//	full/<name>/snapshot.db.gz   etcd's snapshot stream (the bbolt database
//	                             followed by etcd's own sha256 of it), gzip
//	full/<name>/meta.json        Meta, written last: a backup without it is
//	                             incomplete and ignored
//
// Names sort by time: 2026-11-30T10-15-00.000Z-full. Delta segments and
// other kinds of objects get their own folders beside full/.
package backup

import (
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/kopsnode/agents/etcd-manager/control"
)

const (
	fullFolder = "full"
	dataFile   = "snapshot.db.gz"
	metaFile   = "meta.json"
	// nameLayout is the time part of a full backup's name: UTC, fixed
	// width, so names sort by time; no colons (awkward in URLs and paths).
	nameLayout = "2006-01-02T15-04-05.000Z"
	fullSuffix = "-full"
)

var nameRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3}Z-full$`)

// FullPrefix is the folder of full backups, with a trailing slash.
func FullPrefix(l control.Layout) string {
	return path.Join(l.BackupsPrefix(), fullFolder) + "/"
}

// DataKey is the stored (compressed) snapshot of backup name.
func DataKey(l control.Layout, name string) string {
	return path.Join(l.BackupsPrefix(), fullFolder, name, dataFile)
}

// MetaKey is the meta object of backup name.
func MetaKey(l control.Layout, name string) string {
	return path.Join(l.BackupsPrefix(), fullFolder, name, metaFile)
}

// NameAt is the name of a full backup started at t.
func NameAt(t time.Time) string { return t.UTC().Format(nameLayout) + fullSuffix }

// ValidateName checks that name is a full backup's name.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("backup name %q is not of the form 2026-11-30T10-15-00.000Z-full", name)
	}
	return nil
}

// TimeOf returns the start time encoded in a backup name.
func TimeOf(name string) (time.Time, error) {
	if err := ValidateName(name); err != nil {
		return time.Time{}, err
	}
	return time.Parse(nameLayout, strings.TrimSuffix(name, fullSuffix))
}

// splitKey returns the backup name and file of a key under FullPrefix.
func splitKey(l control.Layout, key string) (name, file string, ok bool) {
	rest, ok := strings.CutPrefix(key, FullPrefix(l))
	if !ok {
		return "", "", false
	}
	name, file, ok = strings.Cut(rest, "/")
	if !ok || strings.Contains(file, "/") {
		return "", "", false
	}
	return name, file, true
}
