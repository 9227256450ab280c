package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/backup/verify"
	"github.com/kopsnode/agents/etcd-manager/manager"
	"github.com/kopsnode/agents/pkg/cli"
)

// verifyBackupCommand runs the leader's verification by test restore from
// any shell with store access and the etcd binaries.
func verifyBackupCommand() *cli.Command {
	f := &ctlFlags{}
	var binRoot, workDir string
	var record, deltas bool
	return &cli.Command{
		Name:    "verify-backup",
		Usage:   "NAME",
		Summary: "prove a full backup good by restoring it into a throwaway etcd on loopback and comparing revision, key count and HashKV with its meta",
		Flags: func(fs *flag.FlagSet) {
			f.bind(fs)
			f.bindBackupStore(fs)
			fs.StringVar(&binRoot, "etcd-bin-dir-root", manager.DefaultConfig("", "main").BinDirRoot, "directory with one v<version>/{etcd,etcdutl} per installed etcd version")
			fs.StringVar(&workDir, "work-dir", "", "directory for the temporary copy of the backup and the throwaway etcd's data (needs room for the database twice; default the system's temporary directory)")
			fs.BoolVar(&record, "record", true, "write the result as the backup's verification record in the store (retention keeps the newest verified backup)")
			fs.BoolVar(&deltas, "deltas", true, "also replay the delta segments that chain from the backup")
		},
		Run: func(ctx context.Context, env *cli.Env, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("verify-backup takes one backup name (see list-backups): %w", cli.ErrUsage)
			}
			name := args[0]
			if err := backup.ValidateName(name); err != nil {
				return fmt.Errorf("%v: %w", err, cli.ErrUsage)
			}
			st, l, err := f.open(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			bst, closeBackups, err := f.openBackups(ctx, st)
			if err != nil {
				return err
			}
			defer closeBackups()
			host, _ := os.Hostname()
			res, verr := verify.Backup(ctx, bst, l, name, verify.Options{BinDirRoot: binRoot, WorkDir: workDir, Deltas: deltas,
				Trigger: "verify-backup", Verifier: "etcd-manager-ctl@" + host})
			var ve *verify.Error
			if verr != nil && !errors.As(verr, &ve) {
				return verr
			}
			// A result about the backup itself is recorded; not one about
			// this shell (no binaries, the store or the run interrupted).
			if record && res.Backup != "" && !errors.Is(verr, backup.ErrNoBackup) && recordable(res.Reason) {
				if err := backup.WriteVerification(ctx, bst, l, res); err != nil {
					return err
				}
			}
			if err := cli.Print(env.Stdout, f.out, res, func(w io.Writer) error { return printVerification(w, res) }); err != nil {
				return err
			}
			if verr != nil {
				return fmt.Errorf("backup %s did not verify (%s): %w", name, res.Reason, verr)
			}
			return nil
		},
	}
}

func recordable(reason string) bool {
	switch reason {
	case backup.VerifyReasonTools, backup.VerifyReasonStore, backup.VerifyReasonCanceled:
		return false
	}
	return true
}

func printVerification(w io.Writer, v backup.Verification) error {
	took := v.Finished.Sub(v.Started).Round(time.Millisecond)
	if v.OK {
		fmt.Fprintf(w, "backup %s: verified by a test restore with etcd %s (took %s)\n", v.Backup, v.EtcdVersion, took)
	} else {
		fmt.Fprintf(w, "backup %s: VERIFICATION FAILED (%s) after %s: %s\n", v.Backup, v.Reason, took, v.Error)
	}
	for _, c := range v.Checks {
		fmt.Fprintf(w, "  %s\n", c)
	}
	if v.Segments > 0 {
		fmt.Fprintf(w, "  replayed %d delta segments to revision %d\n", v.Segments, v.ReplayedRevision)
	}
	for _, d := range v.Differences {
		fmt.Fprintf(w, "  DIFFERS: %s\n", d)
	}
	return nil
}
