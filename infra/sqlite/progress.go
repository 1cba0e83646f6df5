package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dvsync/dvsync/infra/storage"
)

// Every time here is the store's clock (s.now): one process writes this file.

func big(n uint64) int64 { return int64(min(n, 1<<62)) }

// StartBacklog opens a backlog period unless one is open.
func (s *Store) StartBacklog(ctx context.Context, table string, kind storage.BacklogKind, total, startSeq uint64) (bool, error) {
	n, err := s.startBacklog(ctx, s.db, table, kind, total, startSeq)
	if err != nil {
		return false, fmt.Errorf("sqlite: start backlog of %s: %w", table, err)
	}
	return n == 1, nil
}

func (s *Store) startBacklog(ctx context.Context, db interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, table string, kind storage.BacklogKind, total, startSeq uint64) (int64, error) {
	now := s.now().UnixNano()
	res, err := db.ExecContext(ctx, `INSERT INTO backlog_periods (table_name, kind, started_at, updated_at, total, left_now, start_seq)
		VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (table_name) WHERE ended_at IS NULL DO NOTHING`,
		table, string(kind), now, now, big(total), big(total), big(startSeq))
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// TickBacklog adds done and stores left on the open period.
func (s *Store) TickBacklog(ctx context.Context, table string, done, left uint64) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE backlog_periods SET done = done + ?, left_now = ?, updated_at = ?
		WHERE table_name = ? AND ended_at IS NULL`, big(done), big(left), s.now().UnixNano(), table); err != nil {
		return fmt.Errorf("sqlite: count backlog of %s: %w", table, err)
	}
	return nil
}

// LeaseBacklogCount takes the counting lease when it is free or run out, or renews holder's.
func (s *Store) LeaseBacklogCount(ctx context.Context, holder string, ttl time.Duration) (bool, error) {
	now := s.now()
	res, err := s.db.ExecContext(ctx, `INSERT INTO backlog_counter (id, holder, expires_at) VALUES (1, ?1, ?2)
		ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
		WHERE backlog_counter.holder = excluded.holder OR backlog_counter.expires_at < ?3`,
		holder, now.Add(ttl).UnixNano(), now.UnixNano())
	if err != nil {
		return false, fmt.Errorf("sqlite: backlog counting lease: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// ReleaseBacklogCount gives holder's counting lease up.
func (s *Store) ReleaseBacklogCount(ctx context.Context, holder string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM backlog_counter WHERE holder = ?`, holder); err != nil {
		return fmt.Errorf("sqlite: backlog counting lease: %w", err)
	}
	return nil
}

// ReportBacklog stores the worker's changes in hand and adds its acks to the open periods.
func (s *Store) ReportBacklog(ctx context.Context, worker string, inHand, acked map[string]uint64) error {
	report, err := json.Marshal(storage.NonZero(inHand))
	if err != nil {
		return fmt.Errorf("sqlite: backlog report of %s: %w", worker, err)
	}
	// One transaction: a report that fails stores none of its acks, so the worker keeps them.
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		now := s.now()
		if _, err := tx.ExecContext(ctx, `INSERT INTO backlog_reports (worker, in_hand, reported_at) VALUES (?, ?, ?)
			ON CONFLICT (worker) DO UPDATE SET in_hand = excluded.in_hand, reported_at = excluded.reported_at`,
			worker, string(report), now.UnixNano()); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM backlog_reports WHERE reported_at < ?`, now.Add(-storage.ReportsKeptFor).UnixNano()); err != nil {
			return err
		}
		for table, n := range acked {
			if n == 0 {
				continue
			}
			if _, err := tx.ExecContext(ctx, `UPDATE backlog_periods SET done = done + ? WHERE table_name = ? AND ended_at IS NULL`,
				big(n), table); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: backlog report of %s: %w", worker, err)
	}
	return nil
}

// InHand adds up the fresh reports.
func (s *Store) InHand(ctx context.Context, freshFor time.Duration) (map[string]uint64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT in_hand FROM backlog_reports WHERE reported_at > ?`, s.now().Add(-freshFor).UnixNano())
	if err != nil {
		return nil, fmt.Errorf("sqlite: changes in hand: %w", err)
	}
	defer rows.Close()
	var reports []map[string]uint64
	for rows.Next() {
		var text string
		if err := rows.Scan(&text); err != nil {
			return nil, fmt.Errorf("sqlite: changes in hand: %w", err)
		}
		var r map[string]uint64
		if err := json.Unmarshal([]byte(text), &r); err != nil {
			return nil, fmt.Errorf("sqlite: changes in hand: %w", err)
		}
		reports = append(reports, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: changes in hand: %w", err)
	}
	return storage.SumInHand(reports), nil
}

// EndBacklog ends the open period.
func (s *Store) EndBacklog(ctx context.Context, table string) (bool, error) {
	n, err := s.endBacklog(ctx, s.db, table)
	if err != nil {
		return false, fmt.Errorf("sqlite: end backlog of %s: %w", table, err)
	}
	return n == 1, nil
}

func (s *Store) endBacklog(ctx context.Context, db interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, table string) (int64, error) {
	res, err := db.ExecContext(ctx, `UPDATE backlog_periods SET ended_at = ?, left_now = 0 WHERE table_name = ? AND ended_at IS NULL`,
		s.now().UnixNano(), table)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// BacklogPeriods are the open periods.
func (s *Store) BacklogPeriods(ctx context.Context) ([]storage.BacklogPeriod, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT table_name, kind, started_at, updated_at, total, done, left_now, start_seq
		FROM backlog_periods WHERE ended_at IS NULL ORDER BY table_name`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: backlog periods: %w", err)
	}
	defer rows.Close()
	var out []storage.BacklogPeriod
	for rows.Next() {
		var p storage.BacklogPeriod
		var kind string
		var started, updated sql.NullInt64
		var total, done, left, seq int64
		if err := rows.Scan(&p.Table, &kind, &started, &updated, &total, &done, &left, &seq); err != nil {
			return nil, fmt.Errorf("sqlite: backlog periods: %w", err)
		}
		p.Kind, p.StartedAt, p.UpdatedAt = storage.BacklogKind(kind), fromNanos(started), fromNanos(updated)
		p.Total, p.Done, p.Left, p.StartSeq = uint64(max(total, 0)), uint64(max(done, 0)), uint64(max(left, 0)), uint64(max(seq, 0))
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: backlog periods: %w", err)
	}
	return out, nil
}

// StartCouplingRun records a run unless one of the table runs; a stale one is marked interrupted.
func (s *Store) StartCouplingRun(ctx context.Context, table, actor string) (storage.CouplingRunRecord, error) {
	var id int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		now := s.now()
		if _, err := tx.ExecContext(ctx, `UPDATE coupling_runs SET finished_at = heartbeat_at, failure = ?
			WHERE table_name = ? AND finished_at IS NULL AND heartbeat_at < ?`,
			storage.RunInterrupted, table, now.Add(-storage.StaleRunAfter).UnixNano()); err != nil {
			return fmt.Errorf("sqlite: start coupling run of %s: %w", table, err)
		}
		var open int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM coupling_runs WHERE table_name = ? AND finished_at IS NULL`, table).Scan(&open); err != nil {
			return fmt.Errorf("sqlite: start coupling run of %s: %w", table, err)
		}
		if open > 0 {
			return storage.ErrRunInProgress
		}
		if err := tx.QueryRowContext(ctx, `INSERT INTO coupling_runs (table_name, started_by, started_at, heartbeat_at) VALUES (?, ?, ?, ?) RETURNING id`,
			table, actor, now.UnixNano(), now.UnixNano()).Scan(&id); err != nil {
			return fmt.Errorf("sqlite: start coupling run of %s: %w", table, err)
		}
		return s.audit(ctx, tx, actor, "coupling run", table, 1)
	})
	if err != nil {
		return storage.CouplingRunRecord{}, err
	}
	runs, err := s.couplingRuns(ctx, "id = ?", id)
	if err != nil || len(runs) == 0 {
		return storage.CouplingRunRecord{}, fmt.Errorf("sqlite: start coupling run of %s: reading it back: %w", table, err)
	}
	return runs[0], nil
}

func optionalInt(n *int) any {
	if n == nil {
		return nil
	}
	return *n
}

// BeatCouplingRun stores the counts and the heartbeat of an unfinished run.
func (s *Store) BeatCouplingRun(ctx context.Context, id int64, c storage.RunCounts) error {
	res, err := s.db.ExecContext(ctx, `UPDATE coupling_runs SET heartbeat_at = ?, total = ?, done = ?, coupled = ?,
		created = ?, failed = ?, skipped = ? WHERE id = ? AND finished_at IS NULL`,
		s.now().UnixNano(), optionalInt(c.Total), c.Done, c.Coupled, c.Created, c.Failed, c.Skipped, id)
	if err != nil {
		return fmt.Errorf("sqlite: coupling run %d: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return fmt.Errorf("sqlite: coupling run %d: %w", id, errors.Join(storage.ErrRunLost, err))
	}
	return nil
}

// FinishCouplingRun ends a run with its last counts.
func (s *Store) FinishCouplingRun(ctx context.Context, id int64, c storage.RunCounts, failure string) error {
	now := s.now().UnixNano()
	if _, err := s.db.ExecContext(ctx, `UPDATE coupling_runs SET heartbeat_at = ?, finished_at = ?, failure = ?,
		total = ?, done = ?, coupled = ?, created = ?, failed = ?, skipped = ? WHERE id = ? AND finished_at IS NULL`,
		now, now, failure, optionalInt(c.Total), c.Done, c.Coupled, c.Created, c.Failed, c.Skipped, id); err != nil {
		return fmt.Errorf("sqlite: finish coupling run %d: %w", id, err)
	}
	return nil
}

// CouplingRuns are the table's runs, newest first.
func (s *Store) CouplingRuns(ctx context.Context, table string, limit int) ([]storage.CouplingRunRecord, error) {
	if limit <= 0 {
		limit = 20
	}
	return s.couplingRuns(ctx, "(?1 = '' OR table_name = ?1) ORDER BY id DESC LIMIT "+fmt.Sprint(limit), table)
}

func (s *Store) couplingRuns(ctx context.Context, where string, arg any) ([]storage.CouplingRunRecord, error) {
	stale := s.now().Add(-storage.StaleRunAfter).UnixNano()
	rows, err := s.db.QueryContext(ctx, `SELECT id, table_name, started_by, started_at, heartbeat_at, finished_at, failure,
		total, done, coupled, created, failed, skipped FROM coupling_runs WHERE `+where, arg)
	if err != nil {
		return nil, fmt.Errorf("sqlite: coupling runs: %w", err)
	}
	defer rows.Close()
	var out []storage.CouplingRunRecord
	for rows.Next() {
		var run storage.CouplingRunRecord
		var started, beat, finished, total sql.NullInt64
		if err := rows.Scan(&run.ID, &run.Table, &run.By, &started, &beat, &finished, &run.Failure,
			&total, &run.Done, &run.Coupled, &run.Created, &run.Failed, &run.Skipped); err != nil {
			return nil, fmt.Errorf("sqlite: coupling runs: %w", err)
		}
		run.StartedAt, run.HeartbeatAt = fromNanos(started), fromNanos(beat)
		if finished.Valid {
			f := fromNanos(finished)
			run.FinishedAt = &f
		}
		if total.Valid {
			n := int(total.Int64)
			run.Total = &n
		}
		run.State = storage.RunState(finished.Valid, run.Failure, beat.Int64 < stale)
		out = append(out, run)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: coupling runs: %w", err)
	}
	return out, nil
}
