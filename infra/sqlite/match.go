package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
)

// CouplingOfRow returns the record coupled to a row of the entity (synced or failed), for
// match-based coupling; Exists is false when none is.
func (s *Store) CouplingOfRow(ctx context.Context, entity string, row uuid.UUID) (domain.Coupling, error) {
	if s.isClosed() {
		return domain.Coupling{}, closedErr
	}
	var c domain.Coupling
	err := scanCoupling(s.db.QueryRowContext(ctx, `SELECT table_name, source_key, `+couplingColumns+` FROM couplings
		WHERE entity = ? AND row_id = ? AND status IN ('synced', 'failed')
		ORDER BY table_name, source_key LIMIT 1`, entity, row.String()), &c, &c.Table, &c.Key)
	if errors.Is(err, sql.ErrNoRows) {
		return domain.Coupling{Version: domain.NoVersion}, nil
	}
	if err != nil {
		return domain.Coupling{}, fmt.Errorf("sqlite: coupling of %s row %s: %w", entity, row, err)
	}
	return c, nil
}

// ClaimRow claims a Dataverse row for the claim's record (domain.RecordLock.ClaimRow), in one
// transaction with the check that no other record is coupled to it.
func (c *claim) ClaimRow(ctx context.Context, entity string, row uuid.UUID) error {
	if err := c.lease.Check(c.table, c.key); err != nil {
		return err
	}
	return c.s.inTx(ctx, func(tx *sql.Tx) error { return c.s.claimRow(ctx, tx, c, entity, row) })
}

// claimRow claims a row in tx, as infra/postgres's claimRows: a row claim lives while its token's
// record claim does, and a dead one is taken over. A row coupled to another record is a
// *domain.RowTakenError, one another record's live claim holds domain.ErrRowBusy.
func (s *Store) claimRow(ctx context.Context, tx *sql.Tx, c *claim, entity string, row uuid.UUID) error {
	id := row.String()
	var other domain.Coupling
	err := tx.QueryRowContext(ctx, `SELECT table_name, source_key, row_name FROM couplings
		WHERE entity = ? AND row_id = ? AND status IN ('synced', 'failed') AND NOT (table_name = ? AND source_key = ?)
		ORDER BY table_name, source_key LIMIT 1`, entity, id, c.table, c.key).Scan(&other.Table, &other.Key, &other.RowName)
	switch {
	case err == nil:
		other.Entity, other.RowID, other.Exists = entity, row, true
		return &domain.RowTakenError{Entity: entity, Row: row, Other: other}
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("sqlite: claim %s row %s: %w", entity, row, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO row_claims (entity, row_id, token, table_name, source_key) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (entity, row_id) DO UPDATE SET token = excluded.token, table_name = excluded.table_name, source_key = excluded.source_key
		WHERE row_claims.token = excluded.token OR NOT EXISTS (
			SELECT 1 FROM record_claims r WHERE r.token = row_claims.token AND r.until > ?)`,
		entity, id, c.token, c.table, c.key, s.now().UnixNano()); err != nil {
		return fmt.Errorf("sqlite: claim %s row %s: %w", entity, row, err)
	}
	var holder string
	if err := tx.QueryRowContext(ctx, `SELECT token FROM row_claims WHERE entity = ? AND row_id = ?`, entity, id).Scan(&holder); err != nil {
		return fmt.Errorf("sqlite: claim %s row %s: %w", entity, row, err)
	}
	if holder != c.token {
		return fmt.Errorf("%w (%s row %s)", domain.ErrRowBusy, entity, row)
	}
	return nil
}

// isRowTaken reports whether err is the unique index on live couplings refusing a second record
// coupled to one row.
func isRowTaken(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed: couplings.entity, couplings.row_id")
}

// rowTaken is the RowTakenError for a coupling the unique index refused, naming the record the
// row is coupled to (err when it cannot be read).
func (s *Store) rowTaken(ctx context.Context, next *domain.Coupling, err error) error {
	other, rerr := s.CouplingOfRow(ctx, next.Entity, next.RowID)
	if rerr != nil || !other.Exists {
		return err
	}
	return &domain.RowTakenError{Entity: next.Entity, Row: next.RowID, Other: other}
}
