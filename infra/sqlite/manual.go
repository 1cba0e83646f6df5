package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// EditCoupling is a person's change of one record's coupling: the record is claimed as the
// workers claim it, and the edit, its audit entry and the resolution of the record's errors are
// stored in the transaction that releases the claim.
func (s *Store) EditCoupling(ctx context.Context, table, key, actor, action string, edit func(context.Context, domain.Coupling) (storage.CouplingEdit, error)) error {
	c, cur, err := s.claimRecord(ctx, table, key)
	if err != nil {
		return err
	}
	defer s.drop(c)
	e, err := edit(ctx, cur)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storage.CommitTimeout)
	defer cancel()
	if err != nil {
		if _, cerr := s.commit(cctx, c, nil); cerr != nil {
			s.release(c)
		}
		return err
	}
	if err := s.inTx(cctx, func(tx *sql.Tx) error { return s.storeEdit(cctx, tx, c, cur, actor, action, e) }); err != nil {
		s.release(c)
		if isRowTaken(err) {
			return s.rowTaken(cctx, e.Next, err)
		}
		return err
	}
	return nil
}

// storeEdit stores the edit in tx while the claim is still c's. An edit that couples the record
// to a row new to it claims the row first (claimRow), and the unique index on a row's live
// couplings has the last word.
func (s *Store) storeEdit(ctx context.Context, tx *sql.Tx, c *claim, current domain.Coupling, actor, action string, e storage.CouplingEdit) error {
	res, err := tx.ExecContext(ctx, `DELETE FROM record_claims WHERE table_name = ? AND source_key = ? AND token = ?`, c.table, c.key, c.token)
	if err != nil {
		return fmt.Errorf("sqlite: edit coupling %s/%s: %w", c.table, c.key, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("%w: %s/%s: nothing stored", storage.ErrLockLost, c.table, c.key)
	}
	if n := e.Next; n != nil && !e.Remove && n.Coupled() && !(current.Coupled() && current.Entity == n.Entity && current.RowID == n.RowID) {
		if err := s.claimRow(ctx, tx, c, n.Entity, n.RowID); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM row_claims WHERE token = ?`, c.token); err != nil {
		return fmt.Errorf("sqlite: edit coupling %s/%s: %w", c.table, c.key, err)
	}
	switch {
	case e.Remove:
		_, err = tx.ExecContext(ctx, `DELETE FROM couplings WHERE table_name = ? AND source_key = ?`, c.table, c.key)
	case e.Next != nil:
		err = s.writeCoupling(ctx, tx, c.table, c.key, e.Next)
	}
	if err != nil {
		return fmt.Errorf("sqlite: edit coupling %s/%s: %w", c.table, c.key, err)
	}
	var resolved int64
	if e.Resolve != "" {
		res, err := tx.ExecContext(ctx, `UPDATE sync_errors SET status = 'resolved', resolved_at = ?, resolved_reason = ?
			WHERE table_name = ? AND source_key = ? AND status IN ('open', 'replayed') AND (? = '' OR class = ?)`,
			s.now().UnixNano(), e.Resolve, c.table, c.key, string(e.ResolveClass), string(e.ResolveClass))
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
