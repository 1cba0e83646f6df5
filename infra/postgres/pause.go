package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/dvsync/dvsync/infra/storage"
)

// PauseTable pauses a table; the change and its audit entry are one transaction.
func (s *Store) PauseTable(ctx context.Context, table, actor string) (bool, error) {
	return s.setPause(ctx, table, actor, true, 0, 0)
}

// ResumeTable resumes a paused table and opens its catch-up period when changes wait.
func (s *Store) ResumeTable(ctx context.Context, table, actor string, backlog, startSeq uint64) (bool, error) {
	return s.setPause(ctx, table, actor, false, backlog, startSeq)
}

func (s *Store) setPause(ctx context.Context, table, actor string, paused bool, backlog, startSeq uint64) (bool, error) {
	action := map[bool]string{true: "pause", false: "resume"}[paused]
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("postgres: %s %s: %w", action, table, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	// Only a change of state is stored: a table never paused runs already, so resuming it stores
	// nothing; the WHERE keeps a second pause (or resume) from moving changed_at. catching_up and
	// resume_backlog are written as the previous release did, for its processes during an upgrade
	// (its serve replicas show the catch-up from them and end it); nothing here reads them.
	var tag interface{ RowsAffected() int64 }
	if paused {
		tag, err = tx.Exec(ctx, `INSERT INTO table_pauses (table_name, paused, changed_by) VALUES ($1, true, $2)
			ON CONFLICT (table_name) DO UPDATE SET paused = true, changed_at = now(), changed_by = EXCLUDED.changed_by,
				catching_up = false, resume_backlog = 0
			WHERE NOT table_pauses.paused`, table, actor)
	} else {
		tag, err = tx.Exec(ctx, `UPDATE table_pauses SET paused = false, changed_at = now(), changed_by = $2,
				catching_up = $3 > 0, resume_backlog = $3
			WHERE table_name = $1 AND paused`, table, actor, big(backlog))
	}
	if err != nil {
		return false, fmt.Errorf("postgres: %s %s: %w", action, table, err)
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	// A pause ends the table's backlog period (what waits then is no load); a resume opens its
	// catch-up, in the transaction that changes the state, so that no status sees one without the other.
	if paused {
		_, err = endBacklog(ctx, tx, table)
	} else if backlog > 0 {
		_, err = tx.Exec(ctx, startBacklog, table, string(storage.BacklogCatchingUp), big(backlog), big(startSeq))
	}
	if err != nil {
		return false, fmt.Errorf("postgres: %s %s: %w", action, table, err)
	}
	target := table
	if !paused {
		target = fmt.Sprintf("%s (%d changes waiting)", table, backlog)
	}
	if err := audit(ctx, tx, actor, action, target, 1); err != nil {
		return false, err
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("postgres: %s %s: %w", action, table, err)
	}
	return true, nil
}

// TableStates are the tables ever paused.
func (s *Store) TableStates(ctx context.Context) ([]storage.TableState, error) {
	rows, err := s.pool.Query(ctx, `SELECT table_name, paused, changed_at, changed_by FROM table_pauses ORDER BY table_name`)
	if err != nil {
		return nil, fmt.Errorf("postgres: table states: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (storage.TableState, error) {
		var st storage.TableState
		err := r.Scan(&st.Table, &st.Paused, &st.Since, &st.By)
		st.Since = st.Since.UTC()
		return st, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: table states: %w", err)
	}
	return out, nil
}
