package app

import (
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/manager"
)

// The human status names the last verified backup and, when the last test
// restore failed, says so with what differed.
func TestPrintVerification(t *testing.T) {
	now := time.Now()
	st := manager.Status{Backups: &manager.BackupStatus{Verification: &manager.VerifyStatus{
		Interval:      "24h0m0s",
		NextScheduled: now.Add(time.Hour),
		LastVerified:  &manager.VerifiedSummary{Backup: "2026-11-30T10-00-00.000Z-full", Finished: now.Add(-time.Minute)},
		Last:          &backup.Verification{Backup: "2026-11-30T11-00-00.000Z-full", Reason: "mismatch", Differences: []string{"hashKV at revision 42: backup 1, restored 2"}},
	}}}
	var b strings.Builder
	if err := PrintStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"last verified backup:", "2026-11-30T10-00-00.000Z-full (test restore passed", "VERIFICATION FAILED:", "2026-11-30T11-00-00.000Z-full (mismatch): hashKV at revision 42: backup 1, restored 2", "next verification:", "(every 24h0m0s)"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("status lacks %q:\n%s", s, b.String())
		}
	}
}
