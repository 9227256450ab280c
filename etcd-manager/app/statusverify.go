package app

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/kopsnode/agents/etcd-manager/manager"
)

// printVerifyStatus prints the test-restore lines of `etcd-manager status`:
// the last backup a test restore proved good, the last result when it
// failed (loudly, with what differed), what runs now and what is next.
func printVerifyStatus(w io.Writer, st manager.Status) {
	if st.Backups == nil || st.Backups.Verification == nil {
		return
	}
	v := st.Backups.Verification
	verified := "none yet"
	if lv := v.LastVerified; lv != nil {
		verified = fmt.Sprintf("%s (test restore passed %s ago)", lv.Backup, time.Since(lv.Finished).Round(time.Second))
	}
	if v.NothingToVerify {
		verified += "; no complete backup to verify"
	}
	fmt.Fprintf(w, "last verified backup:\t%s\n", verified)
	if l := v.Last; l != nil && !l.OK {
		what := l.Error
		if len(l.Differences) > 0 {
			what = strings.Join(l.Differences, "; ")
		}
		fmt.Fprintf(w, "VERIFICATION FAILED:\t%s (%s): %s\n", l.Backup, l.Reason, what)
	}
	if v.Running != "" {
		fmt.Fprintf(w, "verifying:\t%s, since %s\n", v.Running, v.RunningSince.UTC().Format(time.RFC3339))
	}
	if !v.NextScheduled.IsZero() {
		fmt.Fprintf(w, "next verification:\t%s (every %s)\n", v.NextScheduled.UTC().Format(time.RFC3339), v.Interval)
	}
}
