package app

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/manager"
	"github.com/kopsnode/agents/etcd-manager/quorum"
	"github.com/kopsnode/agents/pkg/store/file"
)

// recover-quorum without survivors' reports: with no backup there is
// nothing to recover from and --yes queues nothing; --from-backup latest
// plans the newest backup and, with --yes, queues a restore-backup of it;
// a name that is not a backup name is a usage error, an absent one names
// the store; with no cluster created it says so.
func TestCtlRecoverQuorumFromBackup(t *testing.T) {
	dir := t.TempDir()
	common := []string{"--store", "file://" + dir, "--cluster-name", "c.example"}
	ctl := EtcdManagerCtl()
	st, err := file.New(dir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l := control.Layout{Cluster: "c.example", EtcdCluster: "main"}
	ctx := context.Background()
	if err := control.WriteSpec(ctx, st, l, control.Spec{MemberCount: 3, EtcdVersion: "3.6.16"}); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := run(t, ctl, argv(common, "recover-quorum")...); code != 1 || !strings.Contains(errs, "no etcd cluster was created") {
		t.Fatalf("recover-quorum before creation: %d %q", code, errs)
	}
	if err := control.CreateCluster(ctx, st, l, control.Created{ClusterToken: "etcd-1", EtcdVersion: "3.6.16", CreatedBy: "m1", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if out, errs, code := run(t, ctl, argv(common, "recover-quorum")...); code != 0 || !strings.Contains(out, "source: none") || !strings.Contains(out, "nothing changed") {
		t.Fatalf("recover-quorum with nothing: %d %q %q", code, out, errs)
	}
	if _, errs, code := run(t, ctl, argv(common, "recover-quorum", "--yes")...); code != 1 || !strings.Contains(errs, "no instance reported a lost quorum") {
		t.Fatalf("recover-quorum --yes with nothing: %d %q", code, errs)
	}
	if _, errs, code := run(t, ctl, argv(common, "recover-quorum", "--from-backup=yesterday")...); code != 2 || !strings.Contains(errs, "--from-backup") {
		t.Fatalf("recover-quorum --from-backup with a bad name: %d %q", code, errs)
	}
	if _, errs, code := run(t, ctl, argv(common, "recover-quorum", "--from-backup=latest")...); code != 1 || !strings.Contains(errs, "no such complete backup in file://"+dir) {
		t.Fatalf("recover-quorum --from-backup latest without backups: %d %q", code, errs)
	}
	putBackupObjects(t, st, l, time.Now().Add(-2*time.Hour), true)
	newest := putBackupObjects(t, st, l, time.Now().Add(-time.Hour), true)
	out, errs, code := run(t, ctl, argv(common, "recover-quorum", "--from-backup=latest", "--yes", "-o", "json")...)
	var rq QuorumRecovery
	if code != 0 || json.Unmarshal([]byte(out), &rq) != nil || rq.Plan.Source != quorum.SourceBackup || rq.Plan.Backup != newest || rq.Kind != control.KindRestoreBackup {
		t.Fatalf("recover-quorum --from-backup latest --yes: %d %q %q", code, out, errs)
	}
	cmds, err := control.PendingCommands(ctx, st, l)
	if err != nil || len(cmds) != 1 || cmds[0].ID != rq.Queued || cmds[0].Kind != control.KindRestoreBackup || cmds[0].Args["backup"] != newest {
		t.Fatalf("queued %+v %v, want one restore-backup of %s", cmds, err, newest)
	}
}

func TestPrintRetentionQuorum(t *testing.T) {
	var b strings.Builder
	st := manager.Status{
		Backups:    &manager.BackupStatus{Retention: &manager.RetentionStatus{Policy: backup.Policy{HourlyDays: 7, DailyDays: 90}, LastRun: time.Now(), Kept: 12, Protected: "p", Deleted: 3}},
		QuorumLoss: &manager.QuorumLossStatus{Plan: &quorum.Plan{Lost: true, Healthy: 0, Needed: 2, Source: quorum.SourceMember, Member: "m1", RaftIndex: 42, Revision: 7}},
	}
	printRetentionQuorum(&b, st)
	for _, s := range []string{"hourly for 7 days, daily for 90 days", "kept 12 (protected p), 3 deleted", "LOST: 0 of the 2", "member m1 (raft index 42, revision 7)", "recover-quorum --yes"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("status lacks %q:\n%s", s, b.String())
		}
	}
}
