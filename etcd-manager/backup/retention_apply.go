package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"

	"github.com/kopsnode/agents/etcd-manager/control"
	"github.com/kopsnode/agents/pkg/store"
)

// DeleteFull deletes full backup name: its meta object first, so that an
// interrupted deletion leaves an incomplete backup (ignored by every
// reader, removed by a later retention pass) and never a meta object that
// points at missing data; then every other object of its folder. Every
// version of each object goes on a versioned bucket (store.Store.Delete).
func DeleteFull(ctx context.Context, st store.Store, l control.Layout, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if err := st.Delete(ctx, MetaKey(l, name)); err != nil {
		return fmt.Errorf("deleting backup %s: %w", name, err)
	}
	if err := deleteFolder(ctx, st, path.Join(FullPrefix(l), name)+"/", name); err != nil {
		return err
	}
	// Its verification record goes last: until then it is still a
	// verified backup's record, of a backup no reader uses.
	if err := st.Delete(ctx, VerificationKey(l, name)); err != nil {
		return fmt.Errorf("deleting the verification record of backup %s: %w", name, err)
	}
	return nil
}

func deleteFolder(ctx context.Context, st store.Store, prefix, name string) error {
	infos, err := st.List(ctx, prefix)
	if err != nil {
		return fmt.Errorf("deleting backup %s: %w", name, err)
	}
	var errs []error
	for _, i := range infos {
		if err := st.Delete(ctx, i.Key); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("deleting backup %s: %w", name, err)
	}
	return nil
}

// DeleteSegment deletes a segment's objects in the order given (its meta
// first).
func DeleteSegment(ctx context.Context, st store.Store, s SegmentRef) error {
	for _, k := range s.Keys {
		if err := st.Delete(ctx, k); err != nil {
			return fmt.Errorf("deleting delta segment %s: %w", s.Name, err)
		}
	}
	return nil
}

// RetentionResult counts what ApplyRetention deleted.
type RetentionResult struct {
	DeletedFulls      int
	DeletedIncomplete int
	DeletedSegments   int
	// Err joins every failed deletion; the others went ahead.
	Err error
}

// ApplyRetention deletes what plan says. It never deletes plan.Protected
// (a plan that lists it is refused whole). Failures do not stop the
// other deletions; a failed one is tried again by the next pass.
func ApplyRetention(ctx context.Context, st store.Store, l control.Layout, plan RetentionPlan, logger *slog.Logger) RetentionResult {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var res RetentionResult
	var errs []error
	for _, name := range plan.Delete {
		if name == plan.Protected {
			res.Err = fmt.Errorf("retention plan deletes the protected backup %s; refusing the whole plan", name)
			return res
		}
	}
	for _, name := range plan.Delete {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if err := DeleteFull(ctx, st, l, name); err != nil {
			errs = append(errs, err)
			continue
		}
		res.DeletedFulls++
		logger.Info("retention deleted a full backup", "backup", name)
	}
	for _, name := range plan.DeleteIncomplete {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if err := DeleteFull(ctx, st, l, name); err != nil {
			errs = append(errs, err)
			continue
		}
		res.DeletedIncomplete++
		logger.Info("retention deleted an incomplete backup", "backup", name)
	}
	for _, s := range plan.DeleteSegments {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if err := DeleteSegment(ctx, st, s); err != nil {
			errs = append(errs, err)
			continue
		}
		res.DeletedSegments++
	}
	if res.DeletedSegments > 0 {
		logger.Info("retention deleted delta segments", "count", res.DeletedSegments, "upToRevision", plan.SegmentsFrom)
	}
	res.Err = errors.Join(errs...)
	return res
}

// ReadInventory lists the full backups for retention, with the names of
// those whose last test restore passed (Verified). Invalid backups (a meta
// object that does not parse) are returned apart: retention never deletes
// them (a newer etcd-manager may have written them), it reports them.
// Segments are the caller's to fill in.
func ReadInventory(ctx context.Context, st store.Store, l control.Layout) (Inventory, []Invalid, error) {
	ls, err := List(ctx, st, l)
	if err != nil {
		return Inventory{}, nil, err
	}
	verified, err := Verified(ctx, st, l)
	if err != nil {
		return Inventory{}, nil, err
	}
	return Inventory{Fulls: ls.Backups, Incomplete: ls.Incomplete, Verified: verified}, ls.Invalid, nil
}
