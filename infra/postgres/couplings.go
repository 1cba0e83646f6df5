package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/dvsync/dvsync/domain"
)

var _ domain.CouplingStore = (*Store)(nil)

const couplingColumns = `row_id, entity, version, status, last_synced_at, skipped, last_error_kind, failures, last_attempt_at, row_version`

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// scanCoupling reads couplingColumns into c; lead are destinations for columns selected before them.
func scanCoupling(row pgx.Row, c *domain.Coupling, lead ...any) error {
	var (
		rowID   *uuid.UUID
		synced  *time.Time
		attempt *time.Time
		status  string
		kind    string
	)
	dest := append(lead, &rowID, &c.Entity, &c.Version, &status, &synced, &c.Skipped, &kind, &c.Failures, &attempt, &c.RowVersion)
	if err := row.Scan(dest...); err != nil {
		return err
	}
	c.Exists, c.Status, c.LastErrorKind = true, domain.CouplingStatus(status), domain.Kind(kind)
	if rowID != nil {
		c.RowID = *rowID
	}
	if synced != nil {
		c.LastSyncedAt = *synced
	}
	if attempt != nil {
		c.LastAttemptAt = *attempt
	}
	return nil
}

func readCoupling(ctx context.Context, q querier, table, key, suffix string) (domain.Coupling, error) {
	c := domain.Coupling{Table: table, Key: key, Version: domain.NoVersion}
	err := scanCoupling(q.QueryRow(ctx, `SELECT `+couplingColumns+` FROM couplings WHERE table_name = $1 AND source_key = $2`+suffix, table, key), &c)
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.Coupling{Table: table, Key: key, Version: domain.NoVersion}, nil
	}
	if err != nil {
		return c, rejected(fmt.Errorf("postgres: read coupling %s/%s: %w", table, key, err))
	}
	return c, nil
}

// Coupling returns a record's coupling; a record never seen has Exists false and NoVersion.
func (s *Store) Coupling(ctx context.Context, table, key string) (domain.Coupling, error) {
	return readCoupling(ctx, s.pool, table, key, "")
}

// UpdateCoupling holds a transaction-scoped advisory lock on the record while update runs, so
// that workers in any process write one record one at a time and an older state never lands
// after a newer one. The lock is held across update's Dataverse call, which its callers bound.
func (s *Store) UpdateCoupling(ctx context.Context, table, key string, update func(context.Context, domain.Coupling, domain.RecordLock) (domain.Coupling, error)) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, recordLockID(table, key)); err != nil {
		return fmt.Errorf("postgres: lock %s/%s: %w", table, key, err)
	}
	cur, err := readCoupling(ctx, tx, table, key, "")
	if err != nil {
		return err
	}
	next, err := update(ctx, cur, txLock{tx})
	if errors.Is(err, domain.ErrUnchanged) {
		return tx.Commit(ctx)
	}
	if err != nil {
		return err
	}
	var row *uuid.UUID
	if next.RowID != uuid.Nil {
		row = &next.RowID
	}
	synced, attempt := optionalTime(next.LastSyncedAt), optionalTime(next.LastAttemptAt)
	_, err = tx.Exec(ctx, `
		INSERT INTO couplings (table_name, source_key, `+couplingColumns+`, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, now())
		ON CONFLICT (table_name, source_key) DO UPDATE SET
			row_id = EXCLUDED.row_id, entity = EXCLUDED.entity, version = EXCLUDED.version,
			status = EXCLUDED.status, last_synced_at = EXCLUDED.last_synced_at,
			skipped = EXCLUDED.skipped, last_error_kind = EXCLUDED.last_error_kind,
			failures = EXCLUDED.failures, last_attempt_at = EXCLUDED.last_attempt_at,
			row_version = EXCLUDED.row_version, updated_at = now()`,
		table, key, row, next.Entity, next.Version, string(next.Status), synced, next.Skipped, string(next.LastErrorKind),
		next.Failures, attempt, next.RowVersion)
	if err != nil {
		return rejected(fmt.Errorf("postgres: write coupling %s/%s: %w", table, key, err))
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres: commit coupling %s/%s: %w", table, key, err)
	}
	return nil
}

// txLock is the advisory lock of an UpdateCoupling transaction: it holds while the transaction's
// connection does, so a query on it proves the lock.
type txLock struct{ tx pgx.Tx }

// ErrLockLost is a record lock whose database connection broke: another worker may hold it now.
var ErrLockLost = errors.New("postgres: the record's lock was lost")

func (l txLock) Held(ctx context.Context) error {
	if _, err := l.tx.Exec(ctx, `SELECT 1`); err != nil {
		return fmt.Errorf("%w: %w", ErrLockLost, err)
	}
	return nil
}

// rejected marks err as the record's data being refused by PostgreSQL (IsDataError), so that
// callers report it instead of retrying it for ever.
func rejected(err error) error {
	if IsDataError(err) {
		return fmt.Errorf("%w: %w", domain.ErrStoreRejected, err)
	}
	return err
}

// recordLockID is the advisory lock key of one record. A collision of two records only makes
// them wait for each other.
func recordLockID(table, key string) int64 {
	h := fnv.New64a()
	h.Write([]byte(table))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return int64(h.Sum64())
}

func optionalTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
