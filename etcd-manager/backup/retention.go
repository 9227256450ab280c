package backup

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/config"
)

// Retention keeps, of the full backups:
//
//   - every one started in the last hour (RecentWindow);
//   - the newest of each UTC hour for Policy.HourlyDays days;
//   - the newest of each UTC day for Policy.DailyDays days;
//   - always the newest verified full backup (the newest full backup
//     when none is known to be verified), whatever its age;
//   - the newest full backup started before the last hour: the base of
//     the point-in-time window;
//   - any backup dated in the future (a clock that jumped back).
//
// Delta segments only extend a full backup forward, so a segment is kept
// while it holds a revision after the point-in-time base or after the
// protected (newest verified) full backup, whichever is older: restoring
// to any moment of the last hour, and from the newest verified backup to
// the newest durable revision, always has its whole chain. Older
// segments are deleted; older moments are restorable to the kept full
// backups' points only. The newest segment (the chain's tail, which the
// delta writer links to) is always kept, and so is the full backup a kept
// chain starts from.
//
// The newest kept of each hour and each day is stable: once an hour is
// over, no later backup falls into it, so a sequence of retention passes
// converges on the same set whatever their timing.

// RecentWindow is how far back every full backup is kept.
const RecentWindow = time.Hour

// IncompleteAfter is the age after which a backup with a data object but
// no meta object is taken for a failed one and deleted; younger ones may
// still be in progress.
const IncompleteAfter = 24 * time.Hour

// Default retention, in days: pkg/config's, the one home of the
// defaults of etcdClusters[].backups.retention.
const (
	DefaultHourlyDays = config.DefaultRetentionHourlyDays
	DefaultDailyDays  = config.DefaultRetentionDailyDays
	// MaxRetentionDays bounds both settings (ten years).
	MaxRetentionDays = config.MaxRetentionDays
)

// Policy is how long full backups are kept beyond RecentWindow.
type Policy struct {
	// HourlyDays keeps one full backup per UTC hour for this many days.
	HourlyDays int `json:"hourlyDays"`
	// DailyDays keeps one full backup per UTC day for this many days.
	DailyDays int `json:"dailyDays"`
}

// DefaultPolicy is one per hour for 7 days and one per day for 90 days.
func DefaultPolicy() Policy {
	return Policy{HourlyDays: DefaultHourlyDays, DailyDays: DefaultDailyDays}
}

// Validate returns every problem, naming the field below prefix (such as
// "backups.retention").
func (p Policy) Validate(prefix string) error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int
	}{{"hourlyDays", p.HourlyDays}, {"dailyDays", p.DailyDays}} {
		if f.v < 0 || f.v > MaxRetentionDays {
			errs = append(errs, fmt.Errorf("%s.%s: %d is out of range (0 to %d)", prefix, f.name, f.v, MaxRetentionDays))
		}
	}
	return errors.Join(errs...)
}

// SegmentRef is a delta segment as retention sees it.
type SegmentRef struct {
	// Name identifies the segment in messages and in the plan.
	Name string `json:"name"`
	// FirstRevision and LastRevision are the revisions it holds.
	FirstRevision int64 `json:"firstRevision"`
	LastRevision  int64 `json:"lastRevision"`
	// Keys are its objects, in the order to delete them: the object whose
	// presence makes the segment valid (its meta) first.
	Keys []string `json:"keys"`
	// Base is the full backup a chain's first segment continues; empty
	// for the other segments. A kept chain start keeps its base.
	Base string `json:"base,omitempty"`
}

// SegmentRefOf is the retention view of a delta segment.
func SegmentRefOf(l control.Layout, m SegmentMeta) SegmentRef {
	r := SegmentRef{Name: m.Name, FirstRevision: m.FirstRevision, LastRevision: m.LastRevision,
		Keys: []string{SegmentMetaKey(l, m.Name), SegmentDataKey(l, m.Name)}}
	if m.Prev.StoredSHA256 == "" {
		r.Base = m.Base
	}
	return r
}

// Inventory is what is in the backup area.
type Inventory struct {
	// Fulls are the complete full backups (any order).
	Fulls []Meta
	// Incomplete are names of full backups without meta object.
	Incomplete []string
	Segments   []SegmentRef
	// Verified names the full backups a test restore proved good.
	Verified map[string]bool
}

// Keep reasons, in the plan and the logs.
const (
	KeepRecent    = "recent"
	KeepHourly    = "hourly"
	KeepDaily     = "daily"
	KeepProtected = "newest verified"
	KeepNewest    = "newest (none verified)"
	KeepPITRBase  = "point-in-time base"
	KeepFuture    = "dated in the future"
	KeepChainBase = "base of kept delta segments"
)

// Kept is a full backup retention keeps, with every reason it is kept for.
type Kept struct {
	Name    string   `json:"name"`
	Reasons []string `json:"reasons"`
}

// RetentionPlan is what Retain decided. It names objects only: applying
// it is ApplyRetention's job.
type RetentionPlan struct {
	// Keep are the kept full backups, newest first.
	Keep []Kept `json:"keep"`
	// Delete are the full backups to delete, oldest first.
	Delete []string `json:"delete"`
	// DeleteIncomplete are failed backups (no meta, older than
	// IncompleteAfter).
	DeleteIncomplete []string `json:"deleteIncomplete,omitempty"`
	// Protected is the full backup that is never deleted ("" when there
	// is no full backup).
	Protected string `json:"protected,omitempty"`
	// SegmentsFrom is the revision after which every segment is kept (0:
	// all kept).
	SegmentsFrom   int64        `json:"segmentsFrom"`
	KeepSegments   int          `json:"keepSegments"`
	DeleteSegments []SegmentRef `json:"deleteSegments,omitempty"`
}

// Protected returns the full backup that retention never deletes: the
// newest verified one, or the newest one when none is known verified.
// ok is false when there is none.
func Protected(fulls []Meta, verified map[string]bool) (m Meta, isVerified, ok bool) {
	for _, f := range fulls {
		if verified[f.Name] && (!isVerified || f.Started.After(m.Started)) {
			m, isVerified, ok = f, true, true
		}
	}
	if ok {
		return m, true, true
	}
	for _, f := range fulls {
		if !ok || f.Started.After(m.Started) {
			m, ok = f, true
		}
	}
	return m, false, ok
}

// Retain decides which backups to keep at now under policy p. It is a pure
// function of its inputs.
func Retain(inv Inventory, now time.Time, p Policy) RetentionPlan {
	fulls := append([]Meta(nil), inv.Fulls...)
	// Newest first; names break ties (they sort by time too).
	sort.Slice(fulls, func(a, b int) bool {
		if !fulls[a].Started.Equal(fulls[b].Started) {
			return fulls[a].Started.After(fulls[b].Started)
		}
		return fulls[a].Name > fulls[b].Name
	})
	reasons := map[string][]string{}
	keep := func(name, why string) { reasons[name] = append(reasons[name], why) }

	var plan RetentionPlan
	prot, verified, ok := Protected(fulls, inv.Verified)
	if ok {
		plan.Protected = prot.Name
		if verified {
			keep(prot.Name, KeepProtected)
		} else {
			keep(prot.Name, KeepNewest)
		}
	}
	hourly := time.Duration(p.HourlyDays) * 24 * time.Hour
	daily := time.Duration(p.DailyDays) * 24 * time.Hour
	seenHour, seenDay := map[time.Time]bool{}, map[time.Time]bool{}
	var base *Meta
	for i, f := range fulls {
		t := f.Started.UTC()
		age := now.Sub(t)
		hour := t.Truncate(time.Hour)
		day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
		// Newest first: the first backup met in an hour or a day is its
		// newest.
		newestOfHour, newestOfDay := !seenHour[hour], !seenDay[day]
		seenHour[hour], seenDay[day] = true, true
		switch {
		case age < 0:
			keep(f.Name, KeepFuture)
			continue
		case age < RecentWindow:
			keep(f.Name, KeepRecent)
			continue
		}
		if base == nil {
			base = &fulls[i]
			keep(f.Name, KeepPITRBase)
		}
		if newestOfHour && age < hourly {
			keep(f.Name, KeepHourly)
		}
		if newestOfDay && age < daily {
			keep(f.Name, KeepDaily)
		}
	}

	for _, name := range inv.Incomplete {
		t, err := TimeOf(name)
		if err == nil && now.Sub(t) > IncompleteAfter {
			plan.DeleteIncomplete = append(plan.DeleteIncomplete, name)
		}
	}
	sort.Strings(plan.DeleteIncomplete)

	// Segments after the older of the point-in-time base and the
	// protected backup are kept; with no full backup, every segment is.
	if ok {
		plan.SegmentsFrom = prot.Revision
		if base != nil && base.Revision < plan.SegmentsFrom {
			plan.SegmentsFrom = base.Revision
		}
	}
	// The chain's tail (the newest segment) is kept whatever its
	// revision: the leader's delta writer links the next segment to it.
	var tail int64
	for _, s := range inv.Segments {
		tail = max(tail, s.LastRevision)
	}
	byName := map[string]bool{}
	for _, f := range fulls {
		byName[f.Name] = true
	}
	for _, s := range inv.Segments {
		if plan.SegmentsFrom > 0 && s.LastRevision > 0 && s.LastRevision <= plan.SegmentsFrom && s.LastRevision != tail {
			plan.DeleteSegments = append(plan.DeleteSegments, s)
			continue
		}
		plan.KeepSegments++
		if s.Base != "" && byName[s.Base] {
			keep(s.Base, KeepChainBase)
		}
	}
	for _, f := range fulls {
		if r := reasons[f.Name]; len(r) > 0 {
			plan.Keep = append(plan.Keep, Kept{Name: f.Name, Reasons: r})
		}
	}
	for i := len(fulls) - 1; i >= 0; i-- {
		if len(reasons[fulls[i].Name]) == 0 {
			plan.Delete = append(plan.Delete, fulls[i].Name)
		}
	}
	sort.Slice(plan.DeleteSegments, func(a, b int) bool {
		return plan.DeleteSegments[a].FirstRevision < plan.DeleteSegments[b].FirstRevision
	})
	return plan
}
