package restore

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/control"
)

// Target is what a restore command asks for: one full backup by name
// (restore-backup), or a point in time as an etcd revision or a wall
// time (restore-to).
type Target struct {
	Backup   string    `json:"backup,omitempty"`
	Revision int64     `json:"revision,omitempty"`
	Time     time.Time `json:"time,omitzero"`
}

// Command argument keys.
const (
	ArgBackup   = "backup"
	ArgRevision = "revision"
	ArgTime     = "time"
)

func (t Target) String() string {
	switch {
	case t.Backup != "":
		return "backup " + t.Backup
	case t.Revision > 0:
		return "revision " + strconv.FormatInt(t.Revision, 10)
	}
	return "time " + t.Time.UTC().Format(time.RFC3339Nano)
}

// Args are the command arguments that carry t.
func (t Target) Args() map[string]string {
	switch {
	case t.Backup != "":
		return map[string]string{ArgBackup: t.Backup}
	case t.Revision > 0:
		return map[string]string{ArgRevision: strconv.FormatInt(t.Revision, 10)}
	}
	return map[string]string{ArgTime: t.Time.UTC().Format(time.RFC3339Nano)}
}

// Kind is the command kind that carries t.
func (t Target) Kind() string {
	if t.Backup != "" {
		return control.KindRestoreBackup
	}
	return control.KindRestoreTo
}

// ParseTo parses restore-to's argument: a positive integer is a revision,
// anything else must be an RFC 3339 time.
func ParseTo(s string) (Target, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Target{}, fmt.Errorf("restore-to needs a TIME (RFC 3339, such as 2026-11-30T10:15:00Z) or a REVISION")
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n <= 0 {
			return Target{}, fmt.Errorf("revision %d is not positive", n)
		}
		return Target{Revision: n}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return Target{}, fmt.Errorf("%q is neither a revision nor an RFC 3339 time (such as 2026-11-30T10:15:00Z)", s)
	}
	return Target{Time: t.UTC()}, nil
}

// TargetOf reads the target from a restore command, naming the command and
// argument that is wrong.
func TargetOf(c control.Command) (Target, error) {
	switch c.Kind {
	case control.KindRestoreBackup:
		name := c.Args[ArgBackup]
		if err := backup.ValidateName(name); err != nil {
			return Target{}, fmt.Errorf("command %s: argument %s: %w", c.ID, ArgBackup, err)
		}
		if len(c.Args) != 1 {
			return Target{}, fmt.Errorf("command %s: %s takes only the argument %s", c.ID, c.Kind, ArgBackup)
		}
		return Target{Backup: name}, nil
	case control.KindRestoreTo:
		if len(c.Args) != 1 {
			return Target{}, fmt.Errorf("command %s: %s takes one argument, %s or %s", c.ID, c.Kind, ArgRevision, ArgTime)
		}
		if v, ok := c.Args[ArgRevision]; ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				return Target{}, fmt.Errorf("command %s: argument %s: %q is not a positive revision", c.ID, ArgRevision, v)
			}
			return Target{Revision: n}, nil
		}
		if v, ok := c.Args[ArgTime]; ok {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return Target{}, fmt.Errorf("command %s: argument %s: %w", c.ID, ArgTime, err)
			}
			return Target{Time: t.UTC()}, nil
		}
		return Target{}, fmt.Errorf("command %s: %s needs the argument %s or %s", c.ID, c.Kind, ArgRevision, ArgTime)
	}
	return Target{}, fmt.Errorf("command %s: kind %q is not a restore", c.ID, c.Kind)
}

// BumpMargin is how far past the old cluster's revision a restored
// cluster starts, so every revision a client of the old cluster (an API
// server's watch cache) saw lies in the restored cluster's compacted past.
const BumpMargin = 1_000_000

// UnknownBump is the bump when the old cluster's revision is unknown (it
// did not answer): far beyond what any cluster writes between backups.
const UnknownBump = 100_000_000

// Bump is what etcdutl adds to a snapshot at baseRev restored over a
// cluster at oldRev (0: unknown).
func Bump(oldRev, baseRev int64) int64 {
	if oldRev <= 0 {
		return UnknownBump
	}
	return max(0, oldRev-baseRev) + BumpMargin
}

// CheckVersion refuses to restore a backup written by etcd backupVersion
// into a cluster running clusterVersion when the cluster's minor version
// is older (etcd does not read a newer storage format).
func CheckVersion(backupName, backupVersion, clusterVersion string) error {
	bmaj, bmin, ok1 := majorMinor(backupVersion)
	cmaj, cmin, ok2 := majorMinor(clusterVersion)
	if !ok1 || !ok2 {
		return fmt.Errorf("backup %s: cannot compare etcd versions %q (backup) and %q (cluster)", backupName, backupVersion, clusterVersion)
	}
	if bmaj != cmaj || bmin > cmin {
		return fmt.Errorf("backup %s was written by etcd %s; the cluster runs etcd %s, which cannot read it (set the spec's version to %d.%d or newer first)",
			backupName, backupVersion, clusterVersion, bmaj, bmin)
	}
	return nil
}

func majorMinor(v string) (int, int, bool) {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	a, err1 := strconv.Atoi(parts[0])
	b, err2 := strconv.Atoi(parts[1])
	return a, b, err1 == nil && err2 == nil
}
