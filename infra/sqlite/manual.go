package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// EditCoupling is a person's change of one record's coupling: the record is claimed as the
// workers claim it, and the edit, its audit entry and the resolution of the record's errors are
// stored in the transaction that releases the claim.
func (s *Store) EditCoupling(ctx context.Context, table, key, actor, action string, edit func(context.Context, domain.Coupling) (storage.CouplingEdit, error)) error {
	if s.isClosed() {
		return closedErr
	}
	c := &claim{table: table, key: key, token: uuid.NewString(), s: s}
	s.hold(c)
	defer s.drop(c)
	cur, got, err := s.take(ctx, c)
	if err != nil {
		s.release(c)
		return err
	}
	if !got {
		return fmt.Errorf("%w: %s/%s", domain.ErrRecordBusy, table, key)
	}
	e, err := edit(ctx, cur)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storage.CommitTimeout)
	defer cancel()
	if err != nil {
		if _, cerr := s.commit(cctx, c, nil); cerr != nil {
			s.release(c)
		}
		return err
	}
	if err := s.inTx(cctx, func(tx *sql.Tx) error { return s.storeEdit(cctx, tx, c, actor, action, e) }); err != nil {
		s.release(c)
		return err
	}
	return nil
}

func (s *Store) storeEdit(ctx context.Context, tx *sql.Tx, c *claim, actor, action string, e storage.CouplingEdit) error {
	res, err := tx.ExecContext(ctx, `DELETE FROM record_claims WHERE table_name = ? AND source_key = ? AND token = ?`, c.table, c.key, c.token)
	if err != nil {
		return fmt.Errorf("sqlite: edit coupling %s/%s: %w", c.table, c.key, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("%w: %s/%s: nothing stored", storage.ErrLockLost, c.table, c.key)
	}
	switch {
	case e.Remove:
		_, err = tx.ExecContext(ctx, `DELETE FROM couplings WHERE table_name = ? AND source_key = ?`, c.table, c.key)
	case e.Next != nil:
		n := e.Next
		var rowID any
		if n.RowID != uuid.Nil {
			rowID = n.RowID.String()
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO couplings (table_name, source_key, `+couplingColumns+`, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (table_name, source_key) DO UPDATE SET
				row_id = excluded.row_id, entity = excluded.entity, version = excluded.version, status = excluded.status,
				last_synced_at = excluded.last_synced_at, skipped = excluded.skipped, last_error_kind = excluded.last_error_kind,
				failures = excluded.failures, last_attempt_at = excluded.last_attempt_at, row_version = excluded.row_version,
				row_name = excluded.row_name, updated_at = excluded.updated_at`,
			c.table, c.key, rowID, n.Entity, n.Version, string(n.Status), nanos(n.LastSyncedAt), n.Skipped,
			string(n.LastErrorKind), n.Failures, nanos(n.LastAttemptAt), n.RowVersion, rowName(n.RowName), s.now().UnixNano())
	}
	if err != nil {
		return fmt.Errorf("sqlite: edit coupling %s/%s: %w", c.table, c.key, err)
	}
	var resolved int64
	if e.Resolve != "" {
		res, err := tx.ExecContext(ctx, `UPDATE sync_errors SET status = 'resolved', resolved_at = ?, resolved_reason = ?
			WHERE table_name = ? AND source_key = ? AND status IN ('open', 'replayed')`, s.now().UnixNano(), e.Resolve, c.table, c.key)
		if err != nil {
			return fmt.Errorf("sqlite: resolve %s/%s: %w", c.table, c.key, err)
		}
		resolved, _ = res.RowsAffected()
	}
	target := e.Target
	if resolved > 0 {
		target += fmt.Sprintf("; %d errors resolved", resolved)
	}
	return s.audit(ctx, tx, actor, action, target, 1)
}
