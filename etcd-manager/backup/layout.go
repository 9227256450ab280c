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
//	delta/<first>-<last>/segment.gz
//	                             the events of revisions first to last
//	                             (both 20-digit, zero-padded, so names sort
//	                             by revision), one JSON Event per line, gzip
//	delta/<first>-<last>/meta.json
//	                             SegmentMeta, written last, create-if-absent:
//	                             range, event count, first/last event time,
//	                             stored size and sha256, the link (previous
//	                             segment's last revision and sha256), the
//	                             full backup the chain started from, the
//	                             writer's leader id and term, cluster token
//
// Names sort by time: 2026-11-30T10-15-00.000Z-full. A delta chain starts
// at a full backup (its first segment links to the backup's revision with
// an empty hash) and each later segment links to the one before; a new
// full backup does not start a new chain, only a broken one does (the
// watch's next revision compacted away). Other kinds of objects get their
// own folders beside full/ and delta/.
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
