package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

const couplingColumns = `row_id, entity, version, status, last_synced_at, skipped, last_error_kind, failures, last_attempt_at, row_version, row_name`

type scanner interface{ Scan(dest ...any) error }

// scanCoupling reads couplingColumns into c; lead are destinations for columns selected before them.
func scanCoupling(row scanner, c *domain.Coupling, lead ...any) error {
	var (
		rowID, entity, status, kind, rowVer, rowName sql.NullString
		version, failures                            sql.NullInt64
		synced, attempt                              sql.NullInt64
		skipped                                      sql.NullBool
	)
	dest := append(lead, &rowID, &entity, &version, &status, &synced, &skipped, &kind, &failures, &attempt, &rowVer, &rowName)
	if err := row.Scan(dest...); err != nil {
		return err
	}
	if !status.Valid {
		return nil
	}
	c.Exists, c.Status, c.Entity, c.Version = true, domain.CouplingStatus(status.String), entity.String, version.Int64
	c.Skipped, c.LastErrorKind, c.Failures, c.RowVersion = skipped.Bool, domain.Kind(kind.String), int(failures.Int64), rowVer.String
	c.RowName = rowName.String
	if id, err := uuid.Parse(rowID.String); rowID.Valid && err == nil {
		c.RowID = id
	}
	c.LastSyncedAt, c.LastAttemptAt = fromNanos(synced), fromNanos(attempt)
	return nil
}

func unseen(table, key string) domain.Coupling {
	return domain.Coupling{Table: table, Key: key, Version: domain.NoVersion}
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func readCoupling(ctx context.Context, q querier, table, key string) (domain.Coupling, error) {
	c := unseen(table, key)
	err := scanCoupling(q.QueryRowContext(ctx, `SELECT `+couplingColumns+` FROM couplings WHERE table_name = ? AND source_key = ?`, table, key), &c)
	if errors.Is(err, sql.ErrNoRows) {
		return unseen(table, key), nil
	}
	if err != nil {
		return c, fmt.Errorf("sqlite: read coupling %s/%s: %w", table, key, err)
	}
	return c, nil
}

// Coupling returns a record's coupling; a record never seen has Exists false and NoVersion.
func (s *Store) Coupling(ctx context.Context, table, key string) (domain.Coupling, error) {
	if s.isClosed() {
		return domain.Coupling{}, closedErr
	}
	return readCoupling(ctx, s.db, table, key)
}

// claim is one UpdateCoupling's hold on a record: domain.RecordLock.
type claim struct {
	table, key, token string
	s                 *Store

	lease storage.Lease // by the worker's clock, margin taken off
}

// Held reports whether the claim still holds: its lease has not run out and the database still has it.
func (c *claim) Held(ctx context.Context) error {
	if err := c.lease.Check(c.table, c.key); err != nil {
		return err
	}
	var held bool
	err := c.s.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM record_claims WHERE table_name = ? AND source_key = ?
		AND token = ? AND until > ?)`, c.table, c.key, c.token, c.s.now().UnixNano()).Scan(&held)
	if err != nil {
		return fmt.Errorf("%w: %w", storage.ErrLockLost, err)
	}
	if !held {
		return fmt.Errorf("%w: %s/%s: another worker has it", storage.ErrLockLost, c.table, c.key)
	}
	return nil
}

// UpdateCoupling claims the record, runs update with no transaction open, and stores what it
// returns while releasing the claim, in one transaction: the claims of infra/postgres, so that
// workers in any process update one record one at a time. A record another worker holds is
// domain.ErrRecordBusy at once; a claim lost while update ran stores nothing and is ErrLockLost.
func (s *Store) UpdateCoupling(ctx context.Context, table, key string, update func(context.Context, domain.Coupling, domain.RecordLock) (domain.Coupling, error)) error {
	c, cur, err := s.claimRecord(ctx, table, key)
	if err != nil {
		return err
	}
	defer s.drop(c)
	next, err := update(ctx, cur, c)
	var write *domain.Coupling
	if err == nil {
		write = &next
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storage.CommitTimeout)
	done, cerr := s.commit(cctx, c, write)
	cancel()
	if cerr != nil {
		s.release(c)
	}
	return storage.UpdateOutcome(err, cerr, done, table, key)
}

// claimRecord claims one record and reads its coupling, for UpdateCoupling and EditCoupling; the
// caller drops the claim (s.drop) when done. A record another worker holds is
// domain.ErrRecordBusy.
func (s *Store) claimRecord(ctx context.Context, table, key string) (*claim, domain.Coupling, error) {
	if s.isClosed() {
		return nil, domain.Coupling{}, closedErr
	}
	c := &claim{table: table, key: key, token: uuid.NewString(), s: s}
	s.hold(c)
	cur, got, err := s.take(ctx, c)
	if err != nil {
		s.release(c) // the claim may have been taken all the same
		s.drop(c)
		return nil, domain.Coupling{}, err
	}
	if !got {
		s.drop(c)
		return nil, domain.Coupling{}, fmt.Errorf("%w: %s/%s", domain.ErrRecordBusy, table, key)
	}
	return c, cur, nil
}

// take claims the record unless another live claim holds it, and reads its coupling after.
func (s *Store) take(ctx context.Context, c *claim) (domain.Coupling, bool, error) {
	cur := unseen(c.table, c.key)
	got := false
	sent := time.Now()
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		now := s.now()
		if _, err := tx.ExecContext(ctx, `INSERT INTO record_claims (table_name, source_key, token, until) VALUES (?, ?, ?, ?)
			ON CONFLICT (table_name, source_key) DO UPDATE SET token = excluded.token, until = excluded.until
			WHERE record_claims.until <= ?`, c.table, c.key, c.token, now.Add(s.claimTTL).UnixNano(), now.UnixNano()); err != nil {
			return fmt.Errorf("sqlite: claim %s/%s: %w", c.table, c.key, err)
		}
		var token string
		if err := tx.QueryRowContext(ctx, `SELECT token FROM record_claims WHERE table_name = ? AND source_key = ?`, c.table, c.key).Scan(&token); err != nil {
			return fmt.Errorf("sqlite: claim %s/%s: %w", c.table, c.key, err)
		}
		if got = token == c.token; !got {
			return nil
		}
		var err error
		cur, err = readCoupling(ctx, tx, c.table, c.key)
		return err
	})
	if err != nil {
		return cur, false, err
	}
	if got {
		c.lease.Extend(sent.Add(storage.Trusted(s.claimTTL)))
	}
	return cur, got, nil
}

// commit releases the claim and its row claims, and stores next with it when not nil, only while
// the claim is still this worker's: false when it is not. A coupling the unique index on a row's
// live couplings refuses is a *domain.RowTakenError.
func (s *Store) commit(ctx context.Context, c *claim, next *domain.Coupling) (bool, error) {
	mine := false
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM record_claims WHERE table_name = ? AND source_key = ? AND token = ?`, c.table, c.key, c.token)
		if err != nil {
			return fmt.Errorf("sqlite: release %s/%s: %w", c.table, c.key, err)
		}
		// Deleted even when the claim is lost: they died with it, and nothing else would delete them.
		if _, err := tx.ExecContext(ctx, `DELETE FROM row_claims WHERE token = ?`, c.token); err != nil {
			return fmt.Errorf("sqlite: release %s/%s: %w", c.table, c.key, err)
		}
		n, _ := res.RowsAffected()
		if mine = n == 1; !mine || next == nil {
			return nil
		}
		return s.writeCoupling(ctx, tx, c.table, c.key, next)
	})
	if isRowTaken(err) {
		return false, s.rowTaken(ctx, next, err)
	}
	return mine, err
}

// writeCoupling stores a record's coupling in tx: the one statement commits and edits share.
func (s *Store) writeCoupling(ctx context.Context, tx *sql.Tx, table, key string, next *domain.Coupling) error {
	var rowID any
	if next.RowID != uuid.Nil {
		rowID = next.RowID.String()
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO couplings (table_name, source_key, `+couplingColumns+`, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (table_name, source_key) DO UPDATE SET
			row_id = excluded.row_id, entity = excluded.entity, version = excluded.version, status = excluded.status,
			last_synced_at = excluded.last_synced_at, skipped = excluded.skipped, last_error_kind = excluded.last_error_kind,
			failures = excluded.failures, last_attempt_at = excluded.last_attempt_at, row_version = excluded.row_version,
			row_name = excluded.row_name, updated_at = excluded.updated_at`,
		table, key, rowID, next.Entity, next.Version, string(next.Status), nanos(next.LastSyncedAt), next.Skipped,
		string(next.LastErrorKind), next.Failures, nanos(next.LastAttemptAt), next.RowVersion, rowName(next.RowName), s.now().UnixNano())
	if err != nil {
		return fmt.Errorf("sqlite: write coupling %s/%s: %w", table, key, err)
	}
	return nil
}

// release gives a claim back by itself, after a claim or commit whose effect is unknown.
func (s *Store) release(c *claim) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.inTx(ctx, func(tx *sql.Tx) error {
		_, _ = tx.ExecContext(ctx, `DELETE FROM row_claims WHERE token = ?`, c.token)
		_, err := tx.ExecContext(ctx, `DELETE FROM record_claims WHERE token = ?`, c.token)
		return err
	})
}

func (s *Store) hold(c *claim) { s.mu.Lock(); s.held[c] = struct{}{}; s.mu.Unlock() }
func (s *Store) drop(c *claim) { s.mu.Lock(); delete(s.held, c); s.mu.Unlock() }

// renew extends the leases of every claim this store holds, every third of the lease.
func (s *Store) renew() {
	defer s.wg.Done()
	t := time.NewTicker(s.claimTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		s.mu.Lock()
		held := make([]*claim, 0, len(s.held))
		tokens := make([]string, 0, len(s.held))
		for c := range s.held {
			held = append(held, c)
			tokens = append(tokens, c.token)
		}
		s.mu.Unlock()
		if len(held) == 0 {
			continue
		}
		sent := time.Now()
		renewed, err := s.renewOnce(tokens)
		if err != nil {
			continue // the leases run out unless a later renewal gets through
		}
		for _, c := range held {
			if renewed[c.token] {
				c.lease.Extend(sent.Add(storage.Trusted(s.claimTTL)))
			}
		}
	}
}

func (s *Store) renewOnce(tokens []string) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.claimTTL/3)
	defer cancel()
	now := s.now()
	rows, err := s.db.QueryContext(ctx, `UPDATE record_claims SET until = ?
		WHERE token IN (SELECT value FROM json_each(?)) AND until > ? RETURNING token`,
		now.Add(s.claimTTL).UnixNano(), jsonText(tokens), now.UnixNano())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	renewed := map[string]bool{}
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		renewed[t] = true
	}
	return renewed, rows.Err()
}

// rowName is a row's primary name as stored, bounded as infra/postgres bounds it.
func rowName(name string) string { return storage.Clean(name, storage.IDMax) }
