package app

import (
	"fmt"
	"io"
	"time"

	"github.com/kopsnode/agents/etcd-manager/manager"
	"github.com/kopsnode/agents/etcd-manager/quorum"
)

// printRetentionQuorum prints the retention and quorum-loss lines of
// `etcd-manager status`.
func printRetentionQuorum(w io.Writer, st manager.Status) {
	if b := st.Backups; b != nil && b.Retention != nil {
		r := b.Retention
		line := fmt.Sprintf("last hour, hourly for %d days, daily for %d days", r.Policy.HourlyDays, r.Policy.DailyDays)
		if !r.LastRun.IsZero() {
			line += fmt.Sprintf("; last pass %s ago kept %d (protected %s), %d deleted by this instance", time.Since(r.LastRun).Round(time.Second), r.Kept, orDash(r.Protected), r.Deleted)
		}
		fmt.Fprintf(w, "retention:\t%s\n", line)
		if r.LastError != "" {
			fmt.Fprintf(w, "retention error:\t%s\n", r.LastError)
		}
	}
	q := st.QuorumLoss
	if q == nil {
		return
	}
	if q.Recovering != "" {
		fmt.Fprintf(w, "quorum:\trecovering (command %s)\n", q.Recovering)
	}
	if p := q.Plan; p != nil && p.Lost {
		fmt.Fprintf(w, "quorum:\tLOST: %d of the %d healthy members needed\n", p.Healthy, p.Needed)
		switch p.Source {
		case quorum.SourceMember:
			fmt.Fprintf(w, "recovery would use:\tmember %s (raft index %d, revision %d): etcd-manager-ctl recover-quorum --yes\n", p.Member, p.RaftIndex, p.Revision)
		case quorum.SourceBackup:
			fmt.Fprintf(w, "recovery would use:\tbackup %s (revision %d): etcd-manager-ctl recover-quorum --from-backup %s --yes\n", p.Backup, p.BackupRevision, p.Backup)
		default:
			fmt.Fprintf(w, "recovery would use:\tnothing: %s\n", p.Reason)
		}
	}
	if q.Error != "" {
		fmt.Fprintf(w, "quorum error:\t%s\n", q.Error)
	}
}
