package backup

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/store"
)

// SegmentListing is what ListSegments finds under DeltaPrefix.
type SegmentListing struct {
	// Segments are the complete segments, by first revision, then last
	// revision, then time written.
	Segments []SegmentMeta `json:"segments"`
	// Incomplete are segment names with a data object but no meta object:
	// a segment being written, or one whose writer died.
	Incomplete []string `json:"incomplete,omitempty"`
	// Invalid are segments whose meta object does not parse or validate.
	Invalid []Invalid `json:"invalid,omitempty"`
}

// listReaders bounds the meta objects ListSegments reads at once.
const listReaders = 8

// ListSegments returns every delta segment with its meta, in chain order.
func ListSegments(ctx context.Context, st store.Store, l control.Layout) (SegmentListing, error) {
	infos, err := st.List(ctx, DeltaPrefix(l))
	if err != nil {
		return SegmentListing{}, fmt.Errorf("listing delta segments: %w", err)
	}
	hasMeta, hasData := map[string]bool{}, map[string]bool{}
	var names []string
	for _, i := range infos {
		name, file, ok := splitSegmentKey(l, i.Key)
		if !ok {
			continue
		}
		if _, _, err := ParseSegmentName(name); err != nil {
			continue
		}
		if !hasMeta[name] && !hasData[name] {
			names = append(names, name)
		}
		switch file {
		case metaFile:
			hasMeta[name] = true
		case segmentFile:
			hasData[name] = true
		}
	}
	var out SegmentListing
	var withMeta []string
	for _, n := range names {
		if hasMeta[n] {
			withMeta = append(withMeta, n)
		} else {
			out.Incomplete = append(out.Incomplete, n)
		}
	}
	metas := make([]SegmentMeta, len(withMeta))
	errs := make([]error, len(withMeta))
	var wg sync.WaitGroup
	sem := make(chan struct{}, listReaders)
	for i, n := range withMeta {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			metas[i], errs[i] = ReadSegmentMeta(ctx, st, l, n)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			var se *store.Error
			switch {
			case errors.Is(err, ErrNoBackup):
				continue // deleted since the listing
			case errors.As(err, &se):
				return SegmentListing{}, err
			}
			out.Invalid = append(out.Invalid, Invalid{Name: withMeta[i], Error: err.Error()})
			continue
		}
		out.Segments = append(out.Segments, metas[i])
	}
	SortSegments(out.Segments)
	if out.Segments == nil {
		out.Segments = []SegmentMeta{}
	}
	return out, nil
}

// SortSegments sorts segments by first revision, then last revision, then
// time written.
func SortSegments(segs []SegmentMeta) {
	sort.SliceStable(segs, func(i, j int) bool {
		a, b := segs[i], segs[j]
		if a.FirstRevision != b.FirstRevision {
			return a.FirstRevision < b.FirstRevision
		}
		if a.LastRevision != b.LastRevision {
			return a.LastRevision < b.LastRevision
		}
		return a.Written.Before(b.Written)
	})
}

// Kinds of chain problems.
const (
	ProblemGap         = "gap"         // revisions in no segment, not at a new chain's start
	ProblemOverlap     = "overlap"     // two segments cover some of the same revisions
	ProblemDuplicate   = "duplicate"   // two segments cover exactly the same revisions
	ProblemBrokenLink  = "broken-link" // the previous segment's hash is not the one linked to
	ProblemMissingBase = "missing-base"
	ProblemHash        = "hash" // the stored object differs from its meta
	ProblemUnreadable  = "unreadable"
)

// Problem is one defect of a delta chain, naming the segment.
type Problem struct {
	Kind    string `json:"kind"`
	Segment string `json:"segment"`
	Detail  string `json:"detail"`
}

func (p Problem) String() string {
	return fmt.Sprintf("delta segment %s: %s: %s", p.Segment, p.Kind, p.Detail)
}

// ChainError is a chain with problems, as an error.
type ChainError struct{ Problems []Problem }

func (e *ChainError) Error() string {
	s := fmt.Sprintf("the delta chain has %d problem(s): ", len(e.Problems))
	for i, p := range e.Problems {
		if i > 0 {
			s += "; "
		}
		if i == 5 {
			s += fmt.Sprintf("and %d more", len(e.Problems)-5)
			break
		}
		s += p.String()
	}
	return s
}

// CheckLinks finds the structural defects of a set of segments (any
// order): gaps, overlaps, duplicates (the same range written twice, as
// two leaders across a hand-off would), links to a previous segment whose
// hash differs, and chain starts whose full backup is not in fulls. A gap
// just before a new chain's first segment (one that continues a full
// backup, after the watch's revision was compacted) is not a defect: the
// full backup covers it. Pure: no store access.
func CheckLinks(fulls []Meta, segs []SegmentMeta) []Problem {
	segs = append([]SegmentMeta(nil), segs...)
	SortSegments(segs)
	fullByName := map[string]Meta{}
	for _, f := range fulls {
		fullByName[f.Name] = f
	}
	byLast := map[int64][]SegmentMeta{}
	for _, s := range segs {
		byLast[s.LastRevision] = append(byLast[s.LastRevision], s)
	}
	var out []Problem
	var maxLast int64
	var maxSeg string
	for i, s := range segs {
		chainStart := s.Prev.StoredSHA256 == ""
		if chainStart {
			if f, ok := fullByName[s.Base]; !ok {
				out = append(out, Problem{ProblemMissingBase, s.Name, fmt.Sprintf("it starts a chain from full backup %s, which is not there", s.Base)})
			} else if f.Revision != s.Prev.LastRevision {
				out = append(out, Problem{ProblemMissingBase, s.Name, fmt.Sprintf("it starts a chain from full backup %s at revision %d, but that backup has revision %d", s.Base, s.Prev.LastRevision, f.Revision)})
			}
		}
		if i > 0 {
			switch {
			case s.FirstRevision == segs[i-1].FirstRevision && s.LastRevision == segs[i-1].LastRevision:
				p := segs[i-1]
				out = append(out, Problem{ProblemDuplicate, s.Name, fmt.Sprintf("the same revisions were written twice: by %s (term %d) at %s and by %s (term %d) at %s",
					p.Writer.LeaderID, p.Writer.LeaderTerm, p.Written.UTC().Format("15:04:05.000"), s.Writer.LeaderID, s.Writer.LeaderTerm, s.Written.UTC().Format("15:04:05.000"))})
			case s.FirstRevision <= maxLast:
				out = append(out, Problem{ProblemOverlap, s.Name, fmt.Sprintf("revisions %d-%d (written by %s, term %d) are also in segment %s",
					s.FirstRevision, min(s.LastRevision, maxLast), s.Writer.LeaderID, s.Writer.LeaderTerm, maxSeg)})
			case s.FirstRevision > maxLast+1 && !chainStart:
				out = append(out, Problem{ProblemGap, s.Name, fmt.Sprintf("revisions %d-%d are in no segment (after %s)", maxLast+1, s.FirstRevision-1, maxSeg)})
			}
		}
		if !chainStart {
			prevs := byLast[s.Prev.LastRevision]
			linked := false
			for _, p := range prevs {
				if p.StoredSHA256 == s.Prev.StoredSHA256 {
					linked = true
				}
			}
			if !linked && len(prevs) > 0 {
				out = append(out, Problem{ProblemBrokenLink, s.Name, fmt.Sprintf("it links to a previous segment ending at revision %d with sha256 %s, but %s has sha256 %s",
					s.Prev.LastRevision, s.Prev.StoredSHA256, prevs[0].Name, prevs[0].StoredSHA256)})
			}
		}
		if s.LastRevision > maxLast {
			maxLast, maxSeg = s.LastRevision, s.Name
		}
	}
	return out
}

// CheckChain checks segs as CheckLinks does (against the full backups
// fulls) and reads every segment's data object, checking its size and
// sha256 against the meta. Problems are returned, not errors: the error is
// only for a store that fails or a cancelled ctx.
func CheckChain(ctx context.Context, st store.Store, fulls []Meta, segs []SegmentMeta) ([]Problem, error) {
	out := CheckLinks(fulls, segs)
	for _, s := range segs {
		if _, err := ReadSegment(ctx, st, s); err != nil {
			var se *store.Error
			switch {
			case ctx.Err() != nil:
				return nil, ctx.Err()
			case errors.Is(err, ErrIntegrity):
				out = append(out, Problem{ProblemHash, s.Name, err.Error()})
			case errors.As(err, &se) && !errors.Is(err, store.ErrNotFound):
				return nil, err
			default:
				out = append(out, Problem{ProblemUnreadable, s.Name, err.Error()})
			}
		}
	}
	return out, nil
}

// latestProbe bounds how many of the newest segment names LatestSegment
// reads the meta of before giving up.
const latestProbe = 64

// LatestSegment returns the complete, valid segment of cluster token
// ("" matches any) that ends last, reading metas newest name first (one
// listing and a few reads, not every meta: a chain may hold thousands),
// and the length of its chain: the segment names after its full backup's
// revision up to it (0 when that backup's meta cannot be read). ok is
// false when there is none among the newest names.
func LatestSegment(ctx context.Context, st store.Store, l control.Layout, token string) (m SegmentMeta, chainLen int64, ok bool, err error) {
	infos, err := st.List(ctx, DeltaPrefix(l))
	if err != nil {
		return SegmentMeta{}, 0, false, fmt.Errorf("listing delta segments: %w", err)
	}
	seen := map[string]bool{}
	var names []string
	var firsts []int64
	for _, i := range infos {
		name, file, ok := splitSegmentKey(l, i.Key)
		if !ok || file != metaFile || seen[name] {
			continue
		}
		first, _, err := ParseSegmentName(name)
		if err != nil {
			continue
		}
		seen[name] = true
		names = append(names, name)
		firsts = append(firsts, first)
	}
	// Names sort by first revision, then last: the newest is the greatest.
	sort.Sort(sort.Reverse(sort.StringSlice(names)))
	for i, name := range names {
		if i == latestProbe {
			break
		}
		s, err := ReadSegmentMeta(ctx, st, l, name)
		if err != nil {
			var se *store.Error
			if errors.As(err, &se) && !errors.Is(err, store.ErrNotFound) {
				return SegmentMeta{}, 0, false, err
			}
			continue
		}
		if token != "" && s.ClusterToken != token {
			continue
		}
		if base, err := ReadMeta(ctx, st, l, s.Base); err == nil {
			for _, f := range firsts {
				if f > base.Revision && f <= s.FirstRevision {
					chainLen++
				}
			}
		}
		return s, chainLen, true, nil
	}
	return SegmentMeta{}, 0, false, nil
}
