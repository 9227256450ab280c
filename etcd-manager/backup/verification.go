package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/store"
)

// Verification records live beside full/ and delta/:
//
//	verify/<name>.json   the last test restore of full backup <name>
//	                     (Verification), replaced by each new one
//
// Retention reads them to protect the newest verified backup.
const verifyFolder = "verify"

// VerificationPrefix is the folder of verification records, with a
// trailing slash.
func VerificationPrefix(l control.Layout) string {
	return path.Join(l.BackupsPrefix(), verifyFolder) + "/"
}

// VerificationKey is the verification record of full backup name.
func VerificationKey(l control.Layout, name string) string {
	return path.Join(l.BackupsPrefix(), verifyFolder, name+".json")
}

// Verification failure reasons: the label of the verify failure metric.
const (
	VerifyReasonStore     = "store"     // the store did not give the objects
	VerifyReasonIntegrity = "integrity" // an object's hash differs from its meta
	VerifyReasonChain     = "chain"     // the delta segments after it do not chain
	VerifyReasonTools     = "tools"     // no etcd/etcdutl installed for its version
	VerifyReasonRestore   = "restore"   // etcdutl or the throwaway etcd failed
	VerifyReasonMismatch  = "mismatch"  // the restored data differs
	VerifyReasonCanceled  = "canceled"  // the leader term ended, or the process stops
)

// VerifyReasons are every failure reason, for metrics.
func VerifyReasons() []string {
	return []string{VerifyReasonStore, VerifyReasonIntegrity, VerifyReasonChain, VerifyReasonTools,
		VerifyReasonRestore, VerifyReasonMismatch, VerifyReasonCanceled}
}

// Verification is the result of one test restore of a full backup (and
// the delta segments after it): what was compared, and what differed.
type Verification struct {
	Backup string `json:"backup"`
	// OK is true when the backup restored and every comparison matched.
	OK bool `json:"ok"`
	// Reason is the failure reason (VerifyReason...), Error what failed.
	Reason string `json:"reason,omitempty"`
	Error  string `json:"error,omitempty"`
	// Differences lists each comparison that did not match, with both
	// values.
	Differences []string `json:"differences,omitempty"`
	// Checks lists each comparison made (matched or not).
	Checks []string `json:"checks,omitempty"`
	// Revision, KeyCount and HashKV are the restored backup's.
	Revision int64  `json:"revision,omitempty"`
	KeyCount int64  `json:"keyCount,omitempty"`
	HashKV   uint32 `json:"hashKV,omitempty"`
	// Segments is how many delta segments were replayed after the backup,
	// up to ReplayedRevision; ComparedWithLive says the replayed state
	// was compared with the live cluster at that revision.
	Segments         int   `json:"segments,omitempty"`
	ReplayedRevision int64 `json:"replayedRevision,omitempty"`
	ComparedWithLive bool  `json:"comparedWithLive,omitempty"`
	// EtcdVersion is the etcd that ran the test restore.
	EtcdVersion string `json:"etcdVersion,omitempty"`
	// Trigger says why it ran ("scheduled", "after restore ...",
	// "verify-backup"), Verifier who ran it (a leader id, or
	// etcd-manager-ctl).
	Trigger  string    `json:"trigger,omitempty"`
	Verifier string    `json:"verifier,omitempty"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
}

// WriteVerification stores v as the verification record of v.Backup,
// replacing an earlier one.
func WriteVerification(ctx context.Context, st store.Store, l control.Layout, v Verification) error {
	if err := ValidateName(v.Backup); err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if _, err := st.Put(ctx, VerificationKey(l, v.Backup), bytes.NewReader(b), store.Condition{}); err != nil {
		return fmt.Errorf("writing the verification record of backup %s: %w", v.Backup, err)
	}
	return nil
}

// ReadVerification reads the verification record of backup name; a
// backup never verified is an error wrapping store.ErrNotFound.
func ReadVerification(ctx context.Context, st store.Store, l control.Layout, name string) (Verification, error) {
	key := VerificationKey(l, name)
	b, _, err := store.ReadAll(ctx, st, key)
	if err != nil {
		return Verification{}, fmt.Errorf("reading the verification record of backup %s: %w", name, err)
	}
	var v Verification
	if err := json.Unmarshal(b, &v); err != nil {
		return Verification{}, fmt.Errorf("decoding %s: %w", store.JoinURL(st.URL(), key), err)
	}
	if v.Backup != name {
		return Verification{}, fmt.Errorf("%s: backup %q is not %q", store.JoinURL(st.URL(), key), v.Backup, name)
	}
	return v, nil
}

// Verifications returns every verification record, by backup name; a
// record that does not parse is left out (a store that fails is an error).
func Verifications(ctx context.Context, st store.Store, l control.Layout) ([]Verification, error) {
	infos, err := st.List(ctx, VerificationPrefix(l))
	if err != nil {
		return nil, fmt.Errorf("listing verification records: %w", err)
	}
	var out []Verification
	for _, i := range infos {
		name, ok := strings.CutSuffix(strings.TrimPrefix(i.Key, VerificationPrefix(l)), ".json")
		if !ok || ValidateName(name) != nil {
			continue
		}
		v, err := ReadVerification(ctx, st, l, name)
		if err != nil {
			var se *store.Error
			if errors.As(err, &se) && !errors.Is(err, store.ErrNotFound) {
				return nil, err
			}
			continue
		}
		out = append(out, v)
	}
	return out, nil
}

// Verified returns the names of the backups whose last verification
// passed (Inventory.Verified).
func Verified(ctx context.Context, st store.Store, l control.Layout) (map[string]bool, error) {
	vs, err := Verifications(ctx, st, l)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, v := range vs {
		if v.OK {
			out[v.Backup] = true
		}
	}
	return out, nil
}
