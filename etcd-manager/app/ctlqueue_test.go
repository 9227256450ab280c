package app

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/store"
	"github.com/kopsnode/agents/pkg/store/file"
)

// list-commands shows pending, claimed and finished commands; delete-command
// deletes a pending and a finished one, refuses a claimed one without
// --force (naming its leader) and deletes it with --force, warning that
// this does not stop it; an unknown ID is an error naming it.
func TestCtlCommandQueue(t *testing.T) {
	dir := t.TempDir()
	storeURL := "file://" + dir
	common := []string{"--store", storeURL, "--cluster-name", "c.example"}
	ctl := EtcdManagerCtl()
	if out, errs, code := run(t, ctl, argv(common, "list-commands")...); code != 0 || !strings.Contains(out, "no commands in") {
		t.Fatalf("list-commands on an empty store: %d %q %q", code, out, errs)
	}
	st, err := file.New(dir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l := control.Layout{Cluster: "c.example", EtcdCluster: "main"}
	ctx := context.Background()
	now := time.Now().UTC()
	for _, id := range []string{"1-pending", "2-claimed", "3-done", "4-failed"} {
		if err := control.QueueCommand(ctx, st, l, control.Command{ID: id, Kind: control.KindBackupNow, Created: now, Args: map[string]string{"why": "test"}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"2-claimed", "3-done", "4-failed"} {
		if err := control.ClaimCommand(ctx, st, l, id, control.Claim{LeaderID: "m1", LeaderTerm: 7, Claimed: now}); err != nil {
			t.Fatal(err)
		}
	}
	if err := control.WriteResult(ctx, st, l, "3-done", control.Result{LeaderID: "m1", Finished: now, Detail: "backup-x"}); err != nil {
		t.Fatal(err)
	}
	if err := control.WriteResult(ctx, st, l, "4-failed", control.Result{LeaderID: "m1", Finished: now, Error: "no healthy member"}); err != nil {
		t.Fatal(err)
	}
	out, errs, code := run(t, ctl, argv(common, "list-commands", "-o", "json")...)
	var cl CommandList
	if code != 0 || json.Unmarshal([]byte(out), &cl) != nil {
		t.Fatalf("list-commands -o json: %d %q %q", code, out, errs)
	}
	want := map[string]string{"1-pending": control.StatePending, "2-claimed": control.StateClaimed, "3-done": control.StateSucceeded, "4-failed": control.StateFailed}
	if len(cl.Commands) != 4 {
		t.Fatalf("listed %+v, want 4 commands", cl.Commands)
	}
	for _, r := range cl.Commands {
		if want[r.ID] != r.State || r.Command == nil || r.Command.Args["why"] != "test" {
			t.Errorf("%s: state %q command %+v, want %q", r.ID, r.State, r.Command, want[r.ID])
		}
	}
	out, _, _ = run(t, ctl, argv(common, "list-commands")...)
	for _, s := range []string{"1-pending", "pending", "m1 (term 7)", "no result yet", "backup-x", "error: no healthy member", "why=test"} {
		if !strings.Contains(out, s) {
			t.Errorf("list-commands output lacks %q:\n%s", s, out)
		}
	}

	if _, errs, code := run(t, ctl, argv(common, "delete-command", "2-claimed")...); code != 1 || !strings.Contains(errs, "claimed by leader m1 (term 7)") || !strings.Contains(errs, "--force") {
		t.Fatalf("delete-command of a claimed command without --force: %d %q", code, errs)
	}
	if out, errs, code := run(t, ctl, argv(common, "delete-command", "--force", "2-claimed")...); code != 0 || !strings.Contains(out, "warning:") || !strings.Contains(out, "goes on") {
		t.Fatalf("delete-command --force: %d %q %q", code, out, errs)
	}
	for _, id := range []string{"1-pending", "3-done"} {
		if out, errs, code := run(t, ctl, argv(common, "delete-command", id)...); code != 0 || !strings.Contains(out, "deleted command "+id) {
			t.Fatalf("delete-command %s: %d %q %q", id, code, out, errs)
		}
	}
	if _, errs, code := run(t, ctl, argv(common, "delete-command", "9-none")...); code != 1 || !strings.Contains(errs, "9-none") || !strings.Contains(errs, "no such command") {
		t.Fatalf("delete-command of an unknown id: %d %q", code, errs)
	}
	if _, _, code := run(t, ctl, argv(common, "delete-command", "a/b")...); code == 0 {
		t.Fatal("delete-command accepted an id with a slash")
	}
	infos, _ := st.List(ctx, l.CommandsPrefix())
	var keys []string
	for _, i := range infos {
		keys = append(keys, strings.TrimPrefix(i.Key, l.CommandsPrefix()))
	}
	if strings.Join(keys, ",") != "4-failed,4-failed.claimed,4-failed.result" {
		t.Fatalf("left in the queue: %v, want only 4-failed and its claim and result", keys)
	}
}

func putBackupObjects(t *testing.T, st store.Store, l control.Layout, at time.Time, withMeta bool) string {
	t.Helper()
	name := backup.NameAt(at)
	m := backup.Meta{
		FormatVersion: backup.FormatVersion, Name: name, Kind: backup.KindFull, Object: backup.DataKey(l, name),
		Compression: backup.CompressionGzip, EtcdVersion: "3.6.16", Revision: 5, KeyCount: 1,
		DBSize: 10, DBSHA256: strings.Repeat("ab", 32), StoredSize: 10, StoredSHA256: strings.Repeat("cd", 32),
		Started: at, Finished: at,
	}
	ctx := context.Background()
	if _, err := st.Put(ctx, m.Object, strings.NewReader("0123456789"), store.Condition{}); err != nil {
		t.Fatal(err)
	}
	if withMeta {
		b, _ := json.Marshal(m)
		if _, err := st.Put(ctx, backup.MetaKey(l, name), bytes.NewReader(b), store.Condition{}); err != nil {
			t.Fatal(err)
		}
	}
	return name
}

// delete-backup deletes an older backup and an incomplete one (every
// object), refuses the newest (no backup verified yet) naming why, and
// refuses a name that is not there or is not a backup name.
func TestCtlDeleteBackup(t *testing.T) {
	dir := t.TempDir()
	storeURL := "file://" + dir
	common := []string{"--store", storeURL, "--cluster-name", "c.example"}
	ctl := EtcdManagerCtl()
	st, err := file.New(dir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l := control.Layout{Cluster: "c.example", EtcdCluster: "main"}
	now := time.Now().UTC()
	older := putBackupObjects(t, st, l, now.Add(-2*time.Hour), true)
	newest := putBackupObjects(t, st, l, now.Add(-time.Hour), true)
	incomplete := putBackupObjects(t, st, l, now.Add(-30*time.Minute), false)

	if _, errs, code := run(t, ctl, argv(common, "delete-backup", newest)...); code != 1 || !strings.Contains(errs, newest) || !strings.Contains(errs, "the newest full backup, and no backup is known verified") || !strings.Contains(errs, "nothing deleted") {
		t.Fatalf("delete-backup of the newest: %d %q", code, errs)
	}
	out, errs, code := run(t, ctl, argv(common, "delete-backup", "-o", "json", older)...)
	var d BackupDeleted
	if code != 0 || json.Unmarshal([]byte(out), &d) != nil || d.Name != older || d.Was != "complete" {
		t.Fatalf("delete-backup %s: %d %q %q", older, code, out, errs)
	}
	if out, errs, code := run(t, ctl, argv(common, "delete-backup", incomplete)...); code != 0 || !strings.Contains(out, "deleted incomplete backup "+incomplete) {
		t.Fatalf("delete-backup of an incomplete one: %d %q %q", code, out, errs)
	}
	if _, errs, code := run(t, ctl, argv(common, "delete-backup", older)...); code != 1 || !strings.Contains(errs, older) || !strings.Contains(errs, "not in "+storeURL) {
		t.Fatalf("delete-backup of a deleted backup: %d %q", code, errs)
	}
	if _, errs, code := run(t, ctl, argv(common, "delete-backup", "latest")...); code != 2 || !strings.Contains(errs, `"latest"`) {
		t.Fatalf("delete-backup of a bad name: %d %q", code, errs)
	}
	infos, err := st.List(context.Background(), backup.FullPrefix(l))
	if err != nil || len(infos) != 2 || !strings.Contains(infos[0].Key, newest) || !strings.Contains(infos[1].Key, newest) {
		t.Fatalf("left %v (%v), want only the two objects of %s", infos, err, newest)
	}
}

// argv puts the common flags right after the command name: flags end at
// the first positional argument.
func argv(common []string, cmd string, rest ...string) []string {
	var flags, pos []string
	for i := 0; i < len(rest); i++ {
		switch {
		case rest[i] == "-o":
			flags = append(flags, rest[i], rest[i+1])
			i++
		case strings.HasPrefix(rest[i], "-"):
			flags = append(flags, rest[i])
		default:
			pos = append(pos, rest[i])
		}
	}
	return append(append(append([]string{cmd}, common...), flags...), pos...)
}
