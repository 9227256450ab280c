package app

import (
	"fmt"
	"io"
	"time"

	"github.com/kopsnode/agents/etcd-manager/backup"
)

// BackupList is what `list-backups -o json` prints: the full backups (the
// fields of backup.Listing), the ranges a restore can reach with the delta
// segments, and the chain's structural problems.
type BackupList struct {
	backup.Listing
	// Recoverable are the ranges restore-to can reach, oldest first.
	Recoverable []backup.Range `json:"recoverable"`
	// DeltaSegments counts the complete delta segments.
	DeltaSegments int `json:"deltaSegments"`
	// DeltaProblems are gaps, overlaps, duplicates and broken links
	// (backup.CheckLinks; hashes are checked before a restore).
	DeltaProblems []backup.Problem `json:"deltaProblems,omitempty"`
}

func newBackupList(ls backup.Listing, segs backup.SegmentListing) BackupList {
	if ls.Backups == nil {
		ls.Backups = []backup.Meta{}
	}
	out := BackupList{Listing: ls, Recoverable: backup.RecoverableRanges(ls.Backups, segs.Segments), DeltaSegments: len(segs.Segments),
		DeltaProblems: backup.CheckLinks(ls.Backups, segs.Segments)}
	for _, i := range segs.Invalid {
		out.DeltaProblems = append(out.DeltaProblems, backup.Problem{Kind: backup.ProblemUnreadable, Segment: i.Name, Detail: i.Error})
	}
	if out.Recoverable == nil {
		out.Recoverable = []backup.Range{}
	}
	return out
}

func printRecoverable(w io.Writer, bl BackupList, now time.Time) error {
	if len(bl.Recoverable) == 0 {
		_, err := fmt.Fprintln(w, "recoverable: nothing (no complete full backup)")
		return err
	}
	fmt.Fprintf(w, "recoverable (full backups plus %d delta segment(s)):\n", bl.DeltaSegments)
	for _, r := range bl.Recoverable {
		fmt.Fprintf(w, "  %s to %s (%s ago): revisions %d to %d, from %s\n", r.From.Time.UTC().Format(time.RFC3339), r.To.Time.UTC().Format(time.RFC3339),
			now.Sub(r.To.Time).Round(time.Second), r.From.Revision, r.To.Revision, r.Base)
	}
	for _, p := range bl.DeltaProblems {
		fmt.Fprintf(w, "delta chain problem: %s\n", p)
	}
	return nil
}
