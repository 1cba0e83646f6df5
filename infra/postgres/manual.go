package postgres

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// EditCoupling is a person's change of one record's coupling (couple, uncouple, restore, delete
// coupling). It claims the record with the workers' claims, so that it never races a sync, and
// stores the edit, its audit entry and the resolution of the record's errors in one transaction
// that also releases the claim.
func (s *Store) EditCoupling(ctx context.Context, table, key, actor, action string, edit func(context.Context, domain.Coupling) (storage.CouplingEdit, error)) error {
	c, current, err := s.claimRecord(ctx, table, key)
	if err != nil {
		return err
	}
	io := c.io
	defer io.drop(c)
	e, err := edit(ctx, current)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storage.CommitTimeout)
	defer cancel()
	if err != nil {
		if _, cerr := io.commits.Do(cctx, commit{claim: c}); cerr != nil {
			io.release(c)
		}
		return err
	}
	if err := s.storeEdit(cctx, c, current, actor, action, e); err != nil {
		io.release(c)
		return err
	}
	return nil
}

// storeEdit releases the claim and stores the edit, only while the claim is still c's. An edit
// that couples the record to a row new to it claims the row first, in the transaction (see
// claimRows), and the unique index on a row's live couplings has the last word.
func (s *Store) storeEdit(ctx context.Context, c *claim, current domain.Coupling, actor, action string, e storage.CouplingEdit) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: edit coupling: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	table, key := c.key.table, c.key.key
	tag, err := tx.Exec(ctx, `DELETE FROM record_claims WHERE table_name = $1 AND source_key = $2 AND token = $3`, table, key, c.token.String())
	if err != nil {
		return fmt.Errorf("postgres: edit coupling %s/%s: %w", table, key, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("%w: %s/%s: nothing stored", storage.ErrLockLost, table, key)
	}
	if n := e.Next; n != nil && !e.Remove && n.Coupled() && !(current.Coupled() && current.Entity == n.Entity && current.RowID == n.RowID) {
		errs, err := claimRows(ctx, tx, []rowClaim{{claim: c, entity: n.Entity, row: n.RowID}})
		if err == nil {
			err = errs[0]
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM row_claims WHERE token = $1`, c.token.String()); err != nil {
			return fmt.Errorf("postgres: edit coupling %s/%s: %w", table, key, err)
		}
	}
	switch {
	case e.Remove:
		_, err = tx.Exec(ctx, `DELETE FROM couplings WHERE table_name = $1 AND source_key = $2`, table, key)
	case e.Next != nil:
		n := e.Next
		var rowID *uuid.UUID
		if n.RowID != uuid.Nil {
			rowID = &n.RowID
		}
		_, err = tx.Exec(ctx, `INSERT INTO couplings (table_name, source_key, `+couplingColumns+`, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, now())
			ON CONFLICT (table_name, source_key) DO UPDATE SET
				row_id = EXCLUDED.row_id, entity = EXCLUDED.entity, version = EXCLUDED.version,
				status = EXCLUDED.status, last_synced_at = EXCLUDED.last_synced_at,
				skipped = EXCLUDED.skipped, last_error_kind = EXCLUDED.last_error_kind,
				failures = EXCLUDED.failures, last_attempt_at = EXCLUDED.last_attempt_at,
				row_version = EXCLUDED.row_version, row_name = EXCLUDED.row_name, updated_at = now()`,
			table, key, rowID, n.Entity, n.Version, string(n.Status), optionalTime(n.LastSyncedAt), n.Skipped,
			string(n.LastErrorKind), n.Failures, optionalTime(n.LastAttemptAt), n.RowVersion, rowName(n.RowName))
	}
	if isRowTaken(err) {
		return s.rowTaken(context.WithoutCancel(ctx), e.Next, err)
	}
	if err != nil {
		return rejected(fmt.Errorf("postgres: edit coupling %s/%s: %w", table, key, err))
	}
	var resolved int64
	if e.Resolve != "" {
		tag, err := tx.Exec(ctx, `UPDATE sync_errors SET status = 'resolved', resolved_at = now(), resolved_reason = $3
			WHERE table_name = $1 AND md5(source_key) = md5($2) AND source_key = $2 AND status IN ('open', 'replayed')
			AND ($4 = '' OR class = $4)`,
			table, key, e.Resolve, string(e.ResolveClass))
		if err != nil {
			return fmt.Errorf("postgres: resolve %s/%s: %w", table, key, err)
		}
		resolved = tag.RowsAffected()
	}
	target := e.Target
	if resolved > 0 {
		target += fmt.Sprintf("; %d errors resolved", resolved)
	}
	if err := audit(ctx, tx, actor, action, target, 1); err != nil {
		return err
	}
	return tx.Commit(ctx)
}
