// Package verify proves a full backup good by restoring it: it reads the
// backup (every object's hash checked first), restores it with etcdutl into
// a throwaway etcd on loopback in a temporary directory, replays the delta
// segments that follow it, and compares revision, key count and HashKV
// with the backup's meta and, where it still has the revision, the live
// cluster. The result (backup.Verification) says what differed.
package verify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kopsnode/agents/etcd-manager/backup"
	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/etcd-manager/etcdprocess"
	"github.com/kopsnode/agents/pkg/store"
)

// Options configure one verification.
type Options struct {
	// BinDirRoot holds v<version>/{etcd,etcdutl}.
	BinDirRoot string
	// EtcdVersions are the etcd versions to run the test restore with, the
	// first installed one wins; the backup's own version is tried first.
	EtcdVersions []string
	// WorkDir is where the temporary directory (snapshot, data dir) is
	// made; it needs room for the database twice. Empty: os.TempDir.
	WorkDir string
	// Deltas replays the delta segments that chain from the backup.
	Deltas bool
	// Live is a client of the live cluster: after a replay, its HashKV
	// and key count at the last replayed revision are compared, when it
	// has not compacted that revision away. Nil: no live comparison.
	Live *clientv3.Client
	// Trigger and Verifier are recorded in the result.
	Trigger, Verifier string
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// ErrNothingToVerify is returned by Newest when there is no complete full
// backup (a new cluster): not a failure.
var ErrNothingToVerify = errors.New("no complete full backup to verify")

// Newest verifies the newest complete full backup.
func Newest(ctx context.Context, st store.Store, l control.Layout, o Options) (backup.Verification, error) {
	ls, err := backup.List(ctx, st, l)
	if err != nil {
		now := clock(o)()
		err = &Error{Reason: backup.VerifyReasonStore, Err: err}
		return backup.Verification{Reason: backup.VerifyReasonStore, Error: err.Error(), Trigger: o.Trigger, Verifier: o.Verifier, Started: now, Finished: now}, err
	}
	if len(ls.Backups) == 0 {
		return backup.Verification{}, fmt.Errorf("%w in %s", ErrNothingToVerify, store.JoinURL(st.URL(), backup.FullPrefix(l)))
	}
	return Backup(ctx, st, l, ls.Backups[0].Name, o)
}

func clock(o Options) func() time.Time {
	if o.Now != nil {
		return o.Now
	}
	return time.Now
}

// Error is a failed verification with its reason (backup.VerifyReason...).
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Backup verifies full backup name. The result is filled in whatever
// happens; the error is non-nil when the backup is not proved good (an
// *Error with the reason, also in the result).
func Backup(ctx context.Context, st store.Store, l control.Layout, name string, o Options) (backup.Verification, error) {
	now := clock(o)
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v := backup.Verification{Backup: name, Trigger: o.Trigger, Verifier: o.Verifier, Started: now().UTC()}
	err := run(ctx, st, l, name, o, log, &v)
	v.Finished = now().UTC()
	if err == nil && len(v.Differences) > 0 {
		err = &Error{Reason: backup.VerifyReasonMismatch, Err: fmt.Errorf("backup %s: the test restore differs: %s", name, joinDiffs(v.Differences))}
	}
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			e = &Error{Reason: reasonOf(err), Err: err}
			err = e
		}
		if ctx.Err() != nil {
			e.Reason = backup.VerifyReasonCanceled
		}
		v.OK, v.Reason, v.Error = false, e.Reason, err.Error()
		return v, err
	}
	v.OK = true
	return v, nil
}

func joinDiffs(d []string) string {
	s := ""
	for i, x := range d {
		if i > 0 {
			s += "; "
		}
		s += x
	}
	return s
}

// reasonOf classifies an error of reading the backup.
func reasonOf(err error) string {
	var se *store.Error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return backup.VerifyReasonCanceled
	case errors.Is(err, backup.ErrIntegrity), errors.Is(err, backup.ErrNoBackup):
		return backup.VerifyReasonIntegrity
	case errors.As(err, &se):
		return backup.VerifyReasonStore
	}
	return backup.VerifyReasonIntegrity
}

func run(ctx context.Context, st store.Store, l control.Layout, name string, o Options, log *slog.Logger, v *backup.Verification) error {
	meta, err := backup.ReadMeta(ctx, st, l, name)
	if err != nil {
		return err
	}
	version, err := pickVersion(o.BinDirRoot, append([]string{meta.EtcdVersion}, o.EtcdVersions...))
	if err != nil {
		return &Error{Reason: backup.VerifyReasonTools, Err: fmt.Errorf("verifying backup %s (etcd %s): %w", name, meta.EtcdVersion, err)}
	}
	v.EtcdVersion = version
	// The delta chain is checked before anything is restored.
	var plan backup.Plan
	if o.Deltas {
		segs, err := backup.ListSegments(ctx, st, l)
		if err != nil {
			return &Error{Reason: backup.VerifyReasonStore, Err: err}
		}
		plan, err = backup.PlanRestore([]backup.Meta{meta}, segs.Segments, backup.Target{Latest: true})
		if err != nil {
			return &Error{Reason: backup.VerifyReasonChain, Err: fmt.Errorf("verifying backup %s: %w", name, err)}
		}
	}

	dir, err := os.MkdirTemp(o.WorkDir, "verify-")
	if err != nil {
		return &Error{Reason: backup.VerifyReasonRestore, Err: fmt.Errorf("verifying backup %s: %w", name, err)}
	}
	defer os.RemoveAll(dir)
	snap := filepath.Join(dir, "snapshot")
	if _, err := backup.Read(ctx, st, l, name, snap); err != nil {
		return err
	}
	db := filepath.Join(dir, "snapshot.db")
	if err := backup.ExtractDB(snap, db); err != nil {
		return &Error{Reason: backup.VerifyReasonRestore, Err: fmt.Errorf("verifying backup %s: %w", name, err)}
	}
	_ = os.Remove(snap)
	ds, err := backup.Inspect(db)
	if err != nil {
		return &Error{Reason: backup.VerifyReasonIntegrity, Err: fmt.Errorf("verifying backup %s: %w", name, err)}
	}
	check := func(what string, got, want any) {
		line := fmt.Sprintf("%s: restored %v, meta %v", what, got, want)
		v.Checks = append(v.Checks, line)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			v.Differences = append(v.Differences, line)
		}
	}
	check("database revision", ds.Revision, meta.Revision)
	check("database key count", ds.KeyCount, meta.KeyCount)

	te, err := startThrowaway(ctx, o.BinDirRoot, version, db, filepath.Join(dir, "data"), name, log)
	if err != nil {
		return &Error{Reason: backup.VerifyReasonRestore, Err: fmt.Errorf("verifying backup %s: %w", name, err)}
	}
	defer te.stop()
	c := te.client
	ep := te.endpoint

	count, err := countAt(ctx, c, meta.Revision)
	if err != nil {
		return &Error{Reason: backup.VerifyReasonRestore, Err: fmt.Errorf("verifying backup %s: reading the restored etcd at revision %d: %w", name, meta.Revision, err)}
	}
	v.Revision, v.KeyCount = meta.Revision, count
	check("key count at revision "+strconv.FormatInt(meta.Revision, 10), count, meta.KeyCount)
	if h := meta.HashKV; h != nil {
		if h.CompactRevision > ds.CompactRevision && h.CompactRevision <= meta.Revision {
			// The member compacted between the snapshot and its hash:
			// the same compaction gives the same hash.
			if _, err := c.Compact(ctx, h.CompactRevision, clientv3.WithCompactPhysical()); err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
				return &Error{Reason: backup.VerifyReasonRestore, Err: fmt.Errorf("verifying backup %s: compacting the restored etcd to %d: %w", name, h.CompactRevision, err)}
			}
		}
		got, err := c.HashKV(ctx, ep, meta.Revision)
		if err != nil {
			return &Error{Reason: backup.VerifyReasonRestore, Err: fmt.Errorf("verifying backup %s: HashKV of the restored etcd at revision %d: %w", name, meta.Revision, err)}
		}
		v.HashKV = got.Hash
		check("HashKV at revision "+strconv.FormatInt(meta.Revision, 10), got.Hash, h.Hash)
	} else {
		v.Checks = append(v.Checks, "HashKV: not compared (the meta has none)")
	}
	if len(v.Differences) > 0 || len(plan.Segments) == 0 {
		return nil
	}
	return replay(ctx, st, l, plan, o.Live, te, log, v)
}

// replay applies the plan's segments onto the throwaway etcd and compares
// the result with the live cluster at the last replayed revision.
func replay(ctx context.Context, st store.Store, l control.Layout, plan backup.Plan, live *clientv3.Client, te *throwaway, log *slog.Logger, v *backup.Verification) error {
	c := te.client
	last, err := backup.ReplayDeltas(ctx, st, l, plan, backup.TxnApply(c, 0))
	if err != nil {
		reason := backup.VerifyReasonRestore
		if errors.Is(err, backup.ErrIntegrity) {
			reason = backup.VerifyReasonIntegrity
		}
		return &Error{Reason: reason, Err: fmt.Errorf("verifying backup %s: replaying delta segments: %w", plan.Base.Name, err)}
	}
	v.Segments, v.ReplayedRevision = len(plan.Segments), last
	if live == nil {
		v.Checks = append(v.Checks, fmt.Sprintf("replayed %d segments to revision %d: not compared (no live cluster)", len(plan.Segments), last))
		return nil
	}
	// A revision of the throwaway's own (a lease that expired during the
	// replay deleted keys) shifts revisions: nothing to compare then.
	st2, err := c.Status(ctx, te.endpoint)
	if err != nil {
		return &Error{Reason: backup.VerifyReasonRestore, Err: fmt.Errorf("verifying backup %s: status of the restored etcd: %w", plan.Base.Name, err)}
	}
	if st2.Header.Revision != last {
		v.Checks = append(v.Checks, fmt.Sprintf("replayed to revision %d: not compared with the live cluster (the restored etcd is at revision %d: it wrote revisions of its own, a lease expired)", last, st2.Header.Revision))
		return nil
	}
	leps := live.Endpoints()
	if len(leps) == 0 {
		return nil
	}
	lh, err := live.HashKV(ctx, leps[0], last)
	if err != nil {
		if errors.Is(err, rpctypes.ErrCompacted) {
			v.Checks = append(v.Checks, fmt.Sprintf("replayed to revision %d: not compared (the live cluster compacted it)", last))
			return nil
		}
		log.Warn("verification: the live cluster did not give its HashKV; not compared", "revision", last, "err", err)
		v.Checks = append(v.Checks, fmt.Sprintf("replayed to revision %d: not compared (live cluster: %v)", last, err))
		return nil
	}
	lcount, err := countAt(ctx, live, last)
	if err != nil {
		v.Checks = append(v.Checks, fmt.Sprintf("replayed to revision %d: key count not compared (live cluster: %v)", last, err))
		return nil
	}
	if _, err := c.Compact(ctx, lh.CompactRevision, clientv3.WithCompactPhysical()); err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
		return &Error{Reason: backup.VerifyReasonRestore, Err: fmt.Errorf("verifying backup %s: compacting the restored etcd to %d: %w", plan.Base.Name, lh.CompactRevision, err)}
	}
	th, err := c.HashKV(ctx, te.endpoint, last)
	if err != nil {
		return &Error{Reason: backup.VerifyReasonRestore, Err: fmt.Errorf("verifying backup %s: HashKV of the restored etcd at revision %d: %w", plan.Base.Name, last, err)}
	}
	tcount, err := countAt(ctx, c, last)
	if err != nil {
		return &Error{Reason: backup.VerifyReasonRestore, Err: err}
	}
	v.ComparedWithLive = true
	for _, x := range []struct {
		what      string
		got, want any
	}{
		{fmt.Sprintf("key count at replayed revision %d", last), tcount, lcount},
		{fmt.Sprintf("HashKV at replayed revision %d", last), th.Hash, lh.Hash},
	} {
		line := fmt.Sprintf("%s: restored %v, live %v", x.what, x.got, x.want)
		v.Checks = append(v.Checks, line)
		if fmt.Sprint(x.got) != fmt.Sprint(x.want) {
			v.Differences = append(v.Differences, line)
		}
	}
	return nil
}

func countAt(ctx context.Context, c *clientv3.Client, rev int64) (int64, error) {
	resp, err := c.Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithCountOnly(), clientv3.WithRev(rev))
	if err != nil {
		return 0, err
	}
	return resp.Count, nil
}

// pickVersion returns the first version with both etcd and etcdutl
// installed.
func pickVersion(root string, versions []string) (string, error) {
	var errs []error
	seen := map[string]bool{}
	for _, ver := range versions {
		if ver == "" || seen[ver] {
			continue
		}
		seen[ver] = true
		_, err1 := etcdprocess.BinaryPath(root, ver)
		_, err2 := etcdprocess.UtilPath(root, ver)
		if err1 == nil && err2 == nil {
			return ver, nil
		}
		errs = append(errs, errors.Join(err1, err2))
	}
	if len(errs) == 0 {
		return "", errors.New("no etcd version to run the test restore with")
	}
	return "", errors.Join(errs...)
}

// throwaway is a single-member etcd on loopback running a restored backup.
type throwaway struct {
	proc     *etcdprocess.Process
	client   *clientv3.Client
	endpoint string
}

func (t *throwaway) stop() {
	if t.client != nil {
		_ = t.client.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = t.proc.Stop(ctx)
}

// startTimeout bounds the wait for the throwaway etcd to answer.
const startTimeout = time.Minute

// startThrowaway restores db into dataDir and starts etcd on it, on
// ephemeral loopback ports (tried again on other ports when etcd exits at
// once, as when another process took a port first).
func startThrowaway(ctx context.Context, root, version, db, dataDir, name string, log *slog.Logger) (*throwaway, error) {
	const member = "verify"
	peer, client, err := loopbackURLs()
	if err != nil {
		return nil, err
	}
	if err := etcdprocess.RestoreSnapshot(ctx, etcdprocess.RestoreConfig{
		BinDirRoot: root, Version: version, Snapshot: db, DataDir: dataDir,
		Name: member, InitialCluster: member + "=" + peer, InitialClusterToken: "verify-" + name,
		InitialAdvertisePeerURLs: []string{peer}, Logger: log,
	}); err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			if peer, client, err = loopbackURLs(); err != nil {
				return nil, err
			}
		}
		t, err := tryStart(ctx, root, version, dataDir, member, peer, client, name, log)
		if err == nil {
			return t, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func tryStart(ctx context.Context, root, version, dataDir, member, peer, client, name string, log *slog.Logger) (*throwaway, error) {
	p, err := etcdprocess.Start(etcdprocess.Config{
		BinDirRoot: root, Version: version, Name: member, DataDir: dataDir,
		ListenPeerURLs: []string{peer}, AdvertisePeerURLs: []string{peer},
		ListenClientURLs: []string{client}, AdvertiseClientURLs: []string{client},
		InitialCluster: member + "=" + peer, InitialClusterState: "new", InitialClusterToken: "verify-" + name,
		LogLevel: "warn", Logger: log.With("throwaway", "verify"),
	})
	if err != nil {
		return nil, err
	}
	t := &throwaway{proc: p, endpoint: client}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.stop()
		return nil, err
	}
	t.client = c
	deadline := time.Now().Add(startTimeout)
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := c.Status(rctx, client)
		cancel()
		if err == nil {
			return t, nil
		}
		select {
		case <-p.Done():
			t.stop()
			return nil, fmt.Errorf("the throwaway etcd %s on %s exited at start: %v", version, client, p.ExitErr())
		case <-ctx.Done():
			t.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.stop()
			return nil, fmt.Errorf("the throwaway etcd %s on %s did not answer within %s: %w", version, client, startTimeout, err)
		}
	}
}

// loopbackURLs picks two free ports on 127.0.0.1.
func loopbackURLs() (peer, client string, err error) {
	var ports [2]int
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", "", fmt.Errorf("finding a free loopback port: %w", err)
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		defer ln.Close()
	}
	return fmt.Sprintf("http://127.0.0.1:%d", ports[0]), fmt.Sprintf("http://127.0.0.1:%d", ports[1]), nil
}
