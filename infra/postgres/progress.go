package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dvsync/dvsync/infra/storage"
)

// Every time here is PostgreSQL's now(): the periods and runs are written by many processes.

func big(n uint64) int64 { return int64(min(n, 1<<62)) }

const startBacklog = `INSERT INTO backlog_periods (table_name, kind, total, left_now, start_seq)
	VALUES ($1, $2, $3, $3, $4) ON CONFLICT (table_name) WHERE ended_at IS NULL DO NOTHING`

// StartBacklog opens a backlog period unless one is open; the partial unique index keeps two
// workers from opening two.
func (s *Store) StartBacklog(ctx context.Context, table string, kind storage.BacklogKind, total, startSeq uint64) (bool, error) {
	tag, err := s.pool.Exec(ctx, startBacklog, table, string(kind), big(total), big(startSeq))
	if err != nil {
		return false, fmt.Errorf("postgres: start backlog of %s: %w", table, err)
	}
	return tag.RowsAffected() == 1, nil
}

// TickBacklog adds done and stores left on the open period.
func (s *Store) TickBacklog(ctx context.Context, table string, done, left uint64) error {
	if _, err := s.pool.Exec(ctx, `UPDATE backlog_periods SET done = done + $2, left_now = $3, updated_at = now()
		WHERE table_name = $1 AND ended_at IS NULL`, table, big(done), big(left)); err != nil {
		return fmt.Errorf("postgres: count backlog of %s: %w", table, err)
	}
	return nil
}

// LeaseBacklogCount takes the counting lease when it is free or run out, or renews holder's.
func (s *Store) LeaseBacklogCount(ctx context.Context, holder string, ttl time.Duration) (bool, error) {
	tag, err := s.pool.Exec(ctx, `INSERT INTO backlog_counter (id, holder, expires_at) VALUES (1, $1, now() + make_interval(secs => $2))
		ON CONFLICT (id) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
		WHERE backlog_counter.holder = EXCLUDED.holder OR backlog_counter.expires_at < now()`, holder, ttl.Seconds())
	if err != nil {
		return false, fmt.Errorf("postgres: backlog counting lease: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// ReleaseBacklogCount gives holder's counting lease up.
func (s *Store) ReleaseBacklogCount(ctx context.Context, holder string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM backlog_counter WHERE holder = $1`, holder); err != nil {
		return fmt.Errorf("postgres: backlog counting lease: %w", err)
	}
	return nil
}

// ReportBacklog stores the worker's changes in hand and adds its acks to the open periods.
func (s *Store) ReportBacklog(ctx context.Context, worker string, inHand, acked map[string]uint64) error {
	batch := &pgx.Batch{}
	batch.Queue(`INSERT INTO backlog_reports (worker, in_hand) VALUES ($1, $2)
		ON CONFLICT (worker) DO UPDATE SET in_hand = EXCLUDED.in_hand, reported_at = now()`, worker, storage.NonZero(inHand))
	batch.Queue(`DELETE FROM backlog_reports WHERE reported_at < now() - make_interval(secs => $1)`, storage.ReportsKeptFor.Seconds())
	for table, n := range acked {
		if n > 0 {
			batch.Queue(`UPDATE backlog_periods SET done = done + $2 WHERE table_name = $1 AND ended_at IS NULL`, table, big(n))
		}
	}
	// One transaction: a report that fails stores none of its acks, so the worker keeps them.
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, batch).Close() })
	if err != nil {
		return fmt.Errorf("postgres: backlog report of %s: %w", worker, err)
	}
	return nil
}

// InHand adds up the fresh reports.
func (s *Store) InHand(ctx context.Context, freshFor time.Duration) (map[string]uint64, error) {
	rows, err := s.pool.Query(ctx, `SELECT in_hand FROM backlog_reports WHERE reported_at > now() - make_interval(secs => $1)`,
		freshFor.Seconds())
	if err != nil {
		return nil, fmt.Errorf("postgres: changes in hand: %w", err)
	}
	reports, err := pgx.CollectRows(rows, pgx.RowTo[map[string]uint64])
	if err != nil {
		return nil, fmt.Errorf("postgres: changes in hand: %w", err)
	}
	return storage.SumInHand(reports), nil
}

// EndBacklog ends the open period.
func (s *Store) EndBacklog(ctx context.Context, table string) (bool, error) {
	n, err := endBacklog(ctx, s.pool, table)
	if err != nil {
		return false, fmt.Errorf("postgres: end backlog of %s: %w", table, err)
	}
	return n == 1, nil
}

func endBacklog(ctx context.Context, db interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, table string) (int64, error) {
	tag, err := db.Exec(ctx, `UPDATE backlog_periods SET ended_at = now(), left_now = 0 WHERE table_name = $1 AND ended_at IS NULL`, table)
	return tag.RowsAffected(), err
}

// BacklogPeriods are the open periods.
func (s *Store) BacklogPeriods(ctx context.Context) ([]storage.BacklogPeriod, error) {
	rows, err := s.pool.Query(ctx, `SELECT table_name, kind, started_at, updated_at, total, done, left_now, start_seq
		FROM backlog_periods WHERE ended_at IS NULL ORDER BY table_name`)
	if err != nil {
		return nil, fmt.Errorf("postgres: backlog periods: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (storage.BacklogPeriod, error) {
		var p storage.BacklogPeriod
		var kind string
		var total, done, left, seq int64
		err := r.Scan(&p.Table, &kind, &p.StartedAt, &p.UpdatedAt, &total, &done, &left, &seq)
		p.Kind, p.StartedAt, p.UpdatedAt = storage.BacklogKind(kind), p.StartedAt.UTC(), p.UpdatedAt.UTC()
		p.Total, p.Done, p.Left, p.StartSeq = uint64(max(total, 0)), uint64(max(done, 0)), uint64(max(left, 0)), uint64(max(seq, 0))
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: backlog periods: %w", err)
	}
	return out, nil
}

const staleRun = `heartbeat_at < now() - make_interval(secs => $%d)`

// StartCouplingRun records a run unless one of the table runs; a stale one is marked interrupted.
func (s *Store) StartCouplingRun(ctx context.Context, table, actor string) (storage.CouplingRunRecord, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return storage.CouplingRunRecord{}, fmt.Errorf("postgres: start coupling run of %s: %w", table, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	if _, err := tx.Exec(ctx, `UPDATE coupling_runs SET finished_at = heartbeat_at, failure = $2
		WHERE table_name = $1 AND finished_at IS NULL AND `+fmt.Sprintf(staleRun, 3),
		table, storage.RunInterrupted, storage.StaleRunAfter.Seconds()); err != nil {
		return storage.CouplingRunRecord{}, fmt.Errorf("postgres: start coupling run of %s: %w", table, err)
	}
	var id int64
	err = tx.QueryRow(ctx, `INSERT INTO coupling_runs (table_name, started_by) VALUES ($1, $2) RETURNING id`, table, actor).Scan(&id)
	var pg *pgconn.PgError
	if errors.As(err, &pg) && pg.Code == "23505" { // the unfinished run's index: another one beats
		return storage.CouplingRunRecord{}, storage.ErrRunInProgress
	}
	if err != nil {
		return storage.CouplingRunRecord{}, fmt.Errorf("postgres: start coupling run of %s: %w", table, err)
	}
	if err := audit(ctx, tx, actor, "coupling run", table, 1); err != nil {
		return storage.CouplingRunRecord{}, err
	}
	if err := tx.Commit(ctx); err != nil {
		return storage.CouplingRunRecord{}, fmt.Errorf("postgres: start coupling run of %s: %w", table, err)
	}
	runs, err := s.couplingRuns(ctx, "id = $1", id)
	if err != nil || len(runs) == 0 {
		return storage.CouplingRunRecord{}, fmt.Errorf("postgres: start coupling run of %s: reading it back: %w", table, err)
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
	tag, err := s.pool.Exec(ctx, `UPDATE coupling_runs SET heartbeat_at = now(), total = $2, done = $3, coupled = $4,
		created = $5, failed = $6, skipped = $7 WHERE id = $1 AND finished_at IS NULL`,
		id, optionalInt(c.Total), c.Done, c.Coupled, c.Created, c.Failed, c.Skipped)
	if err != nil {
		return fmt.Errorf("postgres: coupling run %d: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: coupling run %d: %w", id, storage.ErrRunLost)
	}
	return nil
}

// FinishCouplingRun ends a run with its last counts.
func (s *Store) FinishCouplingRun(ctx context.Context, id int64, c storage.RunCounts, failure string) error {
	if _, err := s.pool.Exec(ctx, `UPDATE coupling_runs SET heartbeat_at = now(), finished_at = now(), failure = $8,
		total = $2, done = $3, coupled = $4, created = $5, failed = $6, skipped = $7 WHERE id = $1 AND finished_at IS NULL`,
		id, optionalInt(c.Total), c.Done, c.Coupled, c.Created, c.Failed, c.Skipped, failure); err != nil {
		return fmt.Errorf("postgres: finish coupling run %d: %w", id, err)
	}
	return nil
}

// CouplingRuns are the table's runs, newest first.
func (s *Store) CouplingRuns(ctx context.Context, table string, limit int) ([]storage.CouplingRunRecord, error) {
	if limit <= 0 {
		limit = 20
	}
	return s.couplingRuns(ctx, "($1 = '' OR table_name = $1) ORDER BY id DESC LIMIT "+fmt.Sprint(limit), table)
}

func (s *Store) couplingRuns(ctx context.Context, where string, arg any) ([]storage.CouplingRunRecord, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, table_name, started_by, started_at, heartbeat_at, finished_at, failure,
		total, done, coupled, created, failed, skipped, `+fmt.Sprintf(staleRun, 2)+`
		FROM coupling_runs WHERE `+where, arg, storage.StaleRunAfter.Seconds())
	if err != nil {
		return nil, fmt.Errorf("postgres: coupling runs: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (storage.CouplingRunRecord, error) {
		var run storage.CouplingRunRecord
		var finished *time.Time
		var stale bool
		err := r.Scan(&run.ID, &run.Table, &run.By, &run.StartedAt, &run.HeartbeatAt, &finished, &run.Failure,
			&run.Total, &run.Done, &run.Coupled, &run.Created, &run.Failed, &run.Skipped, &stale)
		run.StartedAt, run.HeartbeatAt = run.StartedAt.UTC(), run.HeartbeatAt.UTC()
		if finished != nil {
			f := finished.UTC()
			run.FinishedAt = &f
		}
		run.State = storage.RunState(finished != nil, run.Failure, stale)
		return run, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: coupling runs: %w", err)
	}
	return out, nil
}
