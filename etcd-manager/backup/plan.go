package backup

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/store"
)

// Target is the point a restore goes to: exactly one of Latest, Revision
// and Time.
type Target struct {
	// Latest is the last durable revision.
	Latest bool `json:"latest,omitempty"`
	// Revision is a source revision: the cluster as it was right after it.
	Revision int64 `json:"revision,omitempty"`
	// Time is a wall-clock time: the cluster with every change the
	// writer received from etcd's watch at or before it.
	Time time.Time `json:"time,omitzero"`
}

// Validate checks that exactly one of the fields is set.
func (t Target) Validate() error {
	n := 0
	if t.Latest {
		n++
	}
	if t.Revision != 0 {
		n++
		if t.Revision < 0 {
			return fmt.Errorf("target revision %d is negative", t.Revision)
		}
	}
	if !t.Time.IsZero() {
		n++
	}
	if n != 1 {
		return errors.New("a restore target is exactly one of: latest, a revision, a time")
	}
	return nil
}

func (t Target) String() string {
	switch {
	case t.Latest:
		return "latest"
	case t.Revision != 0:
		return fmt.Sprintf("revision %d", t.Revision)
	}
	return "time " + t.Time.UTC().Format(time.RFC3339Nano)
}

// Plan is what a restore to a target applies: a full backup, then the
// events of Segments with a revision above Base.Revision, up to and
// including TargetRevision and, when TargetTime is set, received at or
// before it.
type Plan struct {
	Target Target `json:"target"`
	Base   Meta   `json:"base"`
	// Segments are in chain order, each linked to the one before; the
	// first may start at or before Base.Revision (its earlier events are
	// already in the full backup).
	Segments []SegmentMeta `json:"segments,omitempty"`
	// TargetRevision is the last source revision to apply: Base.Revision
	// when there are no segments; for a time target, the last revision of
	// the last segment (the replay stops earlier, at TargetTime).
	TargetRevision int64     `json:"targetRevision"`
	TargetTime     time.Time `json:"targetTime,omitzero"`
}

// Point is a recoverable revision and the time it stands for.
type Point struct {
	Revision int64     `json:"revision"`
	Time     time.Time `json:"time"`
}

// Range is a stretch of revisions (and times) a restore can reach: from a
// full backup through the linked segments after it.
type Range struct {
	From Point `json:"from"`
	To   Point `json:"to"`
	// Base is the oldest full backup the range starts from.
	Base string `json:"base"`
}

func (r Range) String() string {
	return fmt.Sprintf("revisions %d (%s) to %d (%s)", r.From.Revision, r.From.Time.UTC().Format(time.RFC3339), r.To.Revision, r.To.Time.UTC().Format(time.RFC3339))
}

// chainIndex finds the linked path after a full backup.
type chainIndex struct {
	segs []SegmentMeta
	// next[i] are the segments linked after segs[i].
	next [][]int
	// reach[i] is the furthest segment index a path starting at i ends at.
	reach []int
}

func newChainIndex(segs []SegmentMeta) *chainIndex {
	segs = append([]SegmentMeta(nil), segs...)
	SortSegments(segs)
	ci := &chainIndex{segs: segs, next: make([][]int, len(segs)), reach: make([]int, len(segs))}
	byFirst := map[int64][]int{}
	for i, s := range segs {
		byFirst[s.FirstRevision] = append(byFirst[s.FirstRevision], i)
	}
	for i, s := range segs {
		for _, j := range byFirst[s.LastRevision+1] {
			n := segs[j]
			if n.ClusterToken != s.ClusterToken {
				continue
			}
			// A segment links to its predecessor's hash; a new chain's
			// first segment continues a full backup taken at exactly
			// this revision of the same cluster, which is as good.
			if n.Prev.StoredSHA256 == s.StoredSHA256 || n.Prev.StoredSHA256 == "" {
				ci.next[i] = append(ci.next[i], j)
			}
		}
	}
	// Successors have a higher first revision: walk backwards.
	for i := len(segs) - 1; i >= 0; i-- {
		ci.reach[i] = i
		for _, j := range ci.next[i] {
			if ci.better(ci.reach[j], ci.reach[i]) {
				ci.reach[i] = ci.reach[j]
			}
		}
	}
	return ci
}

// better reports whether a path ending at segment a goes further than one
// ending at b.
func (ci *chainIndex) better(a, b int) bool {
	sa, sb := ci.segs[a], ci.segs[b]
	if sa.LastRevision != sb.LastRevision {
		return sa.LastRevision > sb.LastRevision
	}
	return sa.LastEventTime.After(sb.LastEventTime)
}

// path returns the furthest-reaching linked path of segments after full
// backup f: starting with a segment that covers f.Revision+1.
func (ci *chainIndex) path(f Meta) []SegmentMeta {
	start := -1
	for i, s := range ci.segs {
		if s.FirstRevision <= f.Revision+1 && f.Revision+1 <= s.LastRevision && tokensMatch(f.ClusterToken, s.ClusterToken) {
			if start < 0 || ci.better(ci.reach[i], ci.reach[start]) {
				start = i
			}
		}
	}
	if start < 0 {
		return nil
	}
	var out []SegmentMeta
	for i := start; ; {
		out = append(out, ci.segs[i])
		if len(ci.next[i]) == 0 {
			return out
		}
		best := ci.next[i][0]
		for _, j := range ci.next[i][1:] {
			if ci.better(ci.reach[j], ci.reach[best]) {
				best = j
			}
		}
		i = best
	}
}

func tokensMatch(a, b string) bool { return a == "" || b == "" || a == b }

// end is the last point reachable from full backup f through path.
func end(f Meta, path []SegmentMeta) Point {
	if len(path) == 0 {
		return Point{Revision: f.Revision, Time: f.Finished}
	}
	last := path[len(path)-1]
	return Point{Revision: last.LastRevision, Time: last.LastEventTime}
}

// RecoverableRanges are the ranges a restore can reach, oldest first: one
// per full backup and the linked segments after it, merged where they end
// at the same point. A full backup's own point has the time it finished
// (its snapshot holds nothing later). Usually a single range; a chain
// broken by a compacted revision starts a new one. Pure.
func RecoverableRanges(fulls []Meta, segs []SegmentMeta) []Range {
	ci := newChainIndex(segs)
	byEnd := map[Point]Range{}
	for _, f := range fulls {
		e := end(f, ci.path(f))
		from := Point{Revision: f.Revision, Time: f.Finished}
		r, ok := byEnd[e]
		if !ok || from.Revision < r.From.Revision {
			byEnd[e] = Range{From: from, To: e, Base: f.Name}
		}
	}
	out := make([]Range, 0, len(byEnd))
	for _, r := range byEnd {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].From.Time.Equal(out[j].From.Time) {
			return out[i].From.Time.Before(out[j].From.Time)
		}
		return out[i].From.Revision < out[j].From.Revision
	})
	return out
}

// RecoverableRange reads the full backups and delta segments in st and
// returns RecoverableRanges of them (unusable objects left out), oldest
// first; none when there is no complete full backup.
func RecoverableRange(ctx context.Context, st store.Store, l control.Layout) ([]Range, error) {
	fulls, err := List(ctx, st, l)
	if err != nil {
		return nil, err
	}
	segs, err := ListSegments(ctx, st, l)
	if err != nil {
		return nil, err
	}
	return RecoverableRanges(fulls.Backups, segs.Segments), nil
}

func rangesString(rs []Range) string {
	if len(rs) == 0 {
		return "none (no complete full backup)"
	}
	var parts []string
	for _, r := range rs {
		parts = append(parts, r.String())
	}
	return strings.Join(parts, "; ")
}

// ErrOutOfRange is wrapped by PlanRestore's error for a target no backup
// and chain reaches.
var ErrOutOfRange = errors.New("restore target outside the recoverable range")

// PlanRestore picks, for target t, the newest full backup at or before it
// that a linked chain of segments carries to the target, and those
// segments. A target outside every recoverable range is refused with an
// error naming the ranges. Pure: the caller lists fulls (List) and segs
// (ListSegments); unusable objects must be left out.
func PlanRestore(fulls []Meta, segs []SegmentMeta, t Target) (Plan, error) {
	if err := t.Validate(); err != nil {
		return Plan{}, err
	}
	if len(fulls) == 0 {
		return Plan{}, fmt.Errorf("%w: there is no complete full backup to start from", ErrOutOfRange)
	}
	ci := newChainIndex(segs)
	type cand struct {
		f    Meta
		path []SegmentMeta
		end  Point
	}
	cands := make([]cand, 0, len(fulls))
	for _, f := range fulls {
		p := ci.path(f)
		cands = append(cands, cand{f, p, end(f, p)})
	}
	outOfRange := func() error {
		return fmt.Errorf("%w: %s; recoverable: %s", ErrOutOfRange, t, rangesString(RecoverableRanges(fulls, segs)))
	}
	switch {
	case t.Latest:
		// The newest reachable point, from the newest full backup that
		// reaches it.
		best := -1
		for i, c := range cands {
			if best < 0 || c.end.Time.After(cands[best].end.Time) ||
				(c.end == cands[best].end && c.f.Revision > cands[best].f.Revision) {
				best = i
			}
		}
		c := cands[best]
		return Plan{Target: t, Base: c.f, Segments: c.path, TargetRevision: c.end.Revision}, nil
	case t.Revision != 0:
		sort.SliceStable(cands, func(i, j int) bool { return cands[i].f.Revision > cands[j].f.Revision })
		for _, c := range cands {
			if c.f.Revision > t.Revision || c.end.Revision < t.Revision {
				continue
			}
			var path []SegmentMeta
			for _, s := range c.path {
				if s.FirstRevision > t.Revision {
					break
				}
				if s.LastRevision > c.f.Revision {
					path = append(path, s)
				}
			}
			return Plan{Target: t, Base: c.f, Segments: path, TargetRevision: t.Revision}, nil
		}
		return Plan{}, outOfRange()
	default:
		sort.SliceStable(cands, func(i, j int) bool { return cands[i].f.Finished.After(cands[j].f.Finished) })
		for _, c := range cands {
			if c.f.Finished.After(t.Time) || c.end.Time.Before(t.Time) {
				continue
			}
			p := Plan{Target: t, Base: c.f, TargetRevision: c.f.Revision, TargetTime: t.Time}
			for _, s := range c.path {
				if s.FirstEventTime.After(t.Time) {
					break
				}
				if s.LastRevision > c.f.Revision {
					p.Segments = append(p.Segments, s)
					p.TargetRevision = s.LastRevision
				}
			}
			return p, nil
		}
		return Plan{}, outOfRange()
	}
}
