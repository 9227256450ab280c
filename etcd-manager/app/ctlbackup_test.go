package app

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/control"
)

// The backup commands of etcd-manager-ctl without a running leader: an
// empty listing, a bad backup store named, backup-now queued (and its wait
// ending with an error that says what is missing).
func TestCtlBackupCommands(t *testing.T) {
	storeURL := "file://" + t.TempDir()
	common := []string{"--store", storeURL, "--cluster-name", "c.example"}
	ctl := EtcdManagerCtl()
	out, errs, code := run(t, ctl, append([]string{"list-backups"}, common...)...)
	if code != 0 || !strings.Contains(out, "no complete backups in "+storeURL) {
		t.Fatalf("list-backups on an empty store: %d %q %q", code, out, errs)
	}
	out, errs, code = run(t, ctl, append([]string{"list-backups", "-o", "json"}, common...)...)
	var ls backup.Listing
	if code != 0 || json.Unmarshal([]byte(out), &ls) != nil || ls.Backups == nil || len(ls.Backups) != 0 {
		t.Fatalf("list-backups -o json on an empty store: %d %q %q", code, out, errs)
	}
	if _, errs, code = run(t, ctl, append([]string{"list-backups", "--backup-store", "ftp://x/y"}, common...)...); code == 0 || !strings.Contains(errs, "--backup-store") || !strings.Contains(errs, "ftp://x/y") {
		t.Fatalf("list-backups with a bad backup store: %d %q", code, errs)
	}
	out, errs, code = run(t, ctl, append([]string{"status"}, common...)...)
	if code != 0 || !strings.Contains(out, "last backup:") {
		t.Fatalf("status: %d %q %q", code, out, errs)
	}
	out, errs, code = run(t, ctl, append([]string{"backup-now", "-o", "json"}, common...)...)
	var res BackupNowResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || !strings.HasSuffix(res.CommandID, "-"+control.KindBackupNow) || res.Result != nil {
		t.Fatalf("backup-now: %d %q %q", code, out, errs)
	}
	out, errs, code = run(t, ctl, append([]string{"status", "-o", "json"}, common...)...)
	var cs ControlStatus
	if code != 0 || json.Unmarshal([]byte(out), &cs) != nil || len(cs.Commands) != 1 || cs.Commands[0].Kind != control.KindBackupNow || cs.LastBackup != nil {
		t.Fatalf("status after backup-now: %d %q %q", code, out, errs)
	}
	if _, errs, code = run(t, ctl, append([]string{"backup-now", "--wait", "1s"}, common...)...); code != 1 || !strings.Contains(errs, "no result after 1s") || !strings.Contains(errs, "leader") {
		t.Fatalf("backup-now --wait without a leader: %d %q", code, errs)
	}
}
