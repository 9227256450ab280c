package backup

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/store"
)

// Failure reasons, the label of the failure metric.
const (
	ReasonEtcd      = "etcd"      // the member did not answer or the stream broke
	ReasonIntegrity = "integrity" // etcd's own snapshot hash did not match
	ReasonStore     = "store"     // writing the data or meta object failed
	ReasonLocal     = "local"     // the local spool file or its inspection failed
	ReasonCanceled  = "canceled"  // the leader term ended, or the process stops
)

// Error is a failed backup with the reason it failed for.
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the failure reason of an error from Take ("etcd" when
// it is not an *Error).
func ReasonOf(err error) string {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return ReasonCanceled
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ReasonEtcd
}

func fail(reason string, format string, a ...any) error {
	return &Error{Reason: reason, Err: fmt.Errorf(format, a...)}
}

// Options are the details of one backup that Take cannot find itself.
type Options struct {
	// Reason is recorded in the meta: "scheduled", "command <id>"...
	Reason string
	// Spec and ClusterToken are the cluster's, recorded in the meta.
	Spec         control.Spec
	ClusterToken string
	// Member is the etcd member name the client talks to, for the meta.
	Member string
	// Writer is the leader term taking the backup.
	Writer Writer
	// SpoolDir receives the database while it streams by, so its revision
	// and key count can be read from it afterwards; the file is removed
	// before Take returns. It needs room for one database (the etcd data
	// volume is the natural place).
	SpoolDir string
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Take snapshots etcd through the v3 maintenance API of client's first
// endpoint, checks etcd's own hash of the snapshot, and streams it gzip
// compressed into the store (never whole in memory), hashing the stored
// bytes on the way; then it reads the revision and key count from the
// spooled database and writes the meta object, last. On any failure no
// meta is written (a data object without meta is ignored by List and
// removed when possible), and the error is an *Error with its reason.
func Take(ctx context.Context, c *clientv3.Client, st store.Store, l control.Layout, o Options) (Meta, error) {
	now := o.Now
	if now == nil {
		now = time.Now
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	eps := c.Endpoints()
	if len(eps) == 0 {
		return Meta{}, fail(ReasonEtcd, "taking a backup: the etcd client has no endpoint")
	}
	ep := eps[0]
	start := now().UTC()
	m := Meta{
		FormatVersion: FormatVersion, Name: NameAt(start), Kind: KindFull, Compression: CompressionGzip,
		Endpoint: ep, Member: o.Member, ClusterToken: o.ClusterToken,
		Started: start, Reason: o.Reason, Spec: o.Spec, Writer: o.Writer,
	}
	m.Object = DataKey(l, m.Name)
	url := store.JoinURL(st.URL(), m.Object)

	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	status, err := c.Status(sctx, ep)
	cancel()
	if err != nil {
		return Meta{}, wrapCtx(ctx, ReasonEtcd, fmt.Errorf("backup %s: status of etcd at %s: %w", m.Name, ep, err))
	}
	m.EtcdVersion = status.Version

	spool, err := os.CreateTemp(o.SpoolDir, "backup-*.db")
	if err != nil {
		return Meta{}, fail(ReasonLocal, "backup %s: creating the spool file: %w", m.Name, err)
	}
	defer func() {
		spool.Close()
		os.Remove(spool.Name())
	}()

	snapCtx, snapCancel := context.WithCancel(ctx)
	defer snapCancel()
	resp, err := c.SnapshotWithVersion(snapCtx)
	if err != nil {
		return Meta{}, wrapCtx(ctx, ReasonEtcd, fmt.Errorf("backup %s: snapshot from etcd at %s: %w", m.Name, ep, err))
	}
	defer resp.Snapshot.Close()
	m.StorageVersion = resp.Version

	// snapshot -> (dbSplitter -> spool) and (gzip -> pipe -> store), with
	// the stored bytes hashed and counted. The pipe is closed with an error
	// when the snapshot breaks or its hash is wrong, so the store's Put
	// fails and nothing becomes visible at the key.
	pr, pw := io.Pipe()
	storedHash := sha256.New()
	stored := &counter{}
	gz, _ := gzip.NewWriterLevel(io.MultiWriter(pw, storedHash, stored), gzip.BestSpeed)
	spoolW := &recordingWriter{w: spool}
	split := newDBSplitter(spoolW)
	type copyResult struct {
		dbSHA string
		err   error
		// afterPut: the copy failed because the store had already given
		// up (Put returned first), so Put's error is the cause.
		afterPut bool
	}
	var putReturned atomic.Bool
	done := make(chan copyResult, 1)
	go func() {
		var r copyResult
		_, err := io.Copy(io.MultiWriter(split, gz), resp.Snapshot)
		switch {
		case spoolW.err != nil:
			r.err = fail(ReasonLocal, "backup %s: writing the spool file: %w", m.Name, spoolW.err)
		case err != nil:
			r.afterPut = putReturned.Load()
			r.err = wrapCtx(ctx, ReasonEtcd, fmt.Errorf("backup %s: streaming the snapshot from etcd at %s: %w", m.Name, ep, err))
		default:
			if r.dbSHA, err = split.check(); err != nil {
				r.err = &Error{Reason: ReasonIntegrity, Err: fmt.Errorf("backup %s from etcd at %s: %w", m.Name, ep, err)}
			} else if err := gz.Close(); err != nil {
				r.afterPut = putReturned.Load()
				r.err = wrapCtx(ctx, ReasonStore, fmt.Errorf("backup %s: writing %s: %w", m.Name, url, err))
			}
		}
		// A nil error closes the pipe cleanly: the store sees the end.
		pw.CloseWithError(r.err)
		done <- r
	}()
	_, putErr := st.Put(ctx, m.Object, pr, store.Condition{IfAbsent: true})
	putReturned.Store(true)
	// Unblock the copy if the store gave up before the end.
	pr.CloseWithError(errors.New("the store stopped reading"))
	snapCancel()
	res := <-done
	switch {
	case res.err != nil && !res.afterPut:
		// The snapshot broke or its hash was wrong: the pipe carried the
		// error, so the store made nothing visible.
		if putErr == nil {
			removeData(ctx, st, l, m.Name, log)
		}
		return Meta{}, res.err
	case putErr != nil:
		return Meta{}, wrapCtx(ctx, ReasonStore, fmt.Errorf("backup %s: writing %s: %w", m.Name, url, putErr))
	case res.err != nil:
		removeData(ctx, st, l, m.Name, log)
		return Meta{}, res.err
	}
	m.DBSHA256 = res.dbSHA
	m.DBSize = split.size
	m.StoredSize = stored.n
	m.StoredSHA256 = hex.EncodeToString(storedHash.Sum(nil))

	if err := spool.Sync(); err != nil {
		removeData(ctx, st, l, m.Name, log)
		return Meta{}, fail(ReasonLocal, "backup %s: syncing the spool file: %w", m.Name, err)
	}
	ds, err := Inspect(spool.Name())
	if err != nil {
		removeData(ctx, st, l, m.Name, log)
		return Meta{}, fail(ReasonLocal, "backup %s: %w", m.Name, err)
	}
	m.Revision, m.CompactRevision, m.KeyCount = ds.Revision, ds.CompactRevision, ds.KeyCount
	m.HashKV = hashKV(ctx, c, ep, m.Revision, log)
	m.Finished = now().UTC()
	if err := writeMeta(ctx, st, l, m); err != nil {
		removeData(ctx, st, l, m.Name, log)
		return Meta{}, wrapCtx(ctx, ReasonStore, fmt.Errorf("backup %s: %w", m.Name, err))
	}
	return m, nil
}

// hashKV asks the member at ep for its HashKV at rev, for verification.
// Failing to get it does not fail the backup (a compaction may have passed
// rev already); it is logged and left out of the meta.
func hashKV(ctx context.Context, c *clientv3.Client, ep string, rev int64, log *slog.Logger) *HashKV {
	hctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	resp, err := c.HashKV(hctx, ep, rev)
	if err != nil {
		log.Warn("backup meta without HashKV: the member did not give its hash at the snapshot's revision", "endpoint", ep, "revision", rev, "err", err)
		return nil
	}
	return &HashKV{Hash: resp.Hash, Revision: rev, CompactRevision: resp.CompactRevision}
}

// removeData deletes the data object of a backup that failed after it
// was stored; a failure is only logged (List ignores it without meta).
func removeData(ctx context.Context, st store.Store, l control.Layout, name string, log *slog.Logger) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := st.Delete(dctx, DataKey(l, name)); err != nil {
		log.Warn("removing the data object of a failed backup", "backup", name, "err", err)
	}
}

func wrapCtx(ctx context.Context, reason string, err error) error {
	if ctx.Err() != nil {
		reason = ReasonCanceled
	}
	return &Error{Reason: reason, Err: err}
}

// recordingWriter remembers its writer's error, so a failure of the
// local spool file is not taken for a failure of etcd's stream.
type recordingWriter struct {
	w   io.Writer
	err error
}

func (r *recordingWriter) Write(p []byte) (int, error) {
	n, err := r.w.Write(p)
	if err != nil && r.err == nil {
		r.err = err
	}
	return n, err
}

type counter struct{ n int64 }

func (c *counter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
