package sqlite

import (
	"context"
	"database/sql"
	"fmt"

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
	changed := false
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var res sql.Result
		var err error
		now := s.now().UnixNano()
		if paused {
			res, err = tx.ExecContext(ctx, `INSERT INTO table_pauses (table_name, paused, changed_at, changed_by) VALUES (?, 1, ?, ?)
				ON CONFLICT (table_name) DO UPDATE SET paused = 1, changed_at = excluded.changed_at, changed_by = excluded.changed_by,
					catching_up = 0, resume_backlog = 0
				WHERE NOT table_pauses.paused`, table, now, actor)
		} else {
			// catching_up and resume_backlog as the previous release wrote them (see infra/postgres).
			b := big(backlog)
			res, err = tx.ExecContext(ctx, `UPDATE table_pauses SET paused = 0, changed_at = ?, changed_by = ?,
					catching_up = ? > 0, resume_backlog = ?
				WHERE table_name = ? AND paused`, now, actor, b, b, table)
		}
		if err != nil {
			return fmt.Errorf("sqlite: %s %s: %w", action, table, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		changed = true
		// A pause ends the table's backlog period (what waits then is no load); a resume opens its
		// catch-up, in the transaction that changes the state.
		if paused {
			_, err = s.endBacklog(ctx, tx, table)
		} else if backlog > 0 {
			_, err = s.startBacklog(ctx, tx, table, storage.BacklogCatchingUp, backlog, startSeq)
		}
		if err != nil {
			return fmt.Errorf("sqlite: %s %s: %w", action, table, err)
		}
		target := table
		if !paused {
			target = fmt.Sprintf("%s (%d changes waiting)", table, backlog)
		}
		return s.audit(ctx, tx, actor, action, target, 1)
	})
	return changed, err
}

// TableStates are the tables ever paused.
func (s *Store) TableStates(ctx context.Context) ([]storage.TableState, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT table_name, paused, changed_at, changed_by FROM table_pauses ORDER BY table_name`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: table states: %w", err)
	}
	defer rows.Close()
	var out []storage.TableState
	for rows.Next() {
		var st storage.TableState
		var at sql.NullInt64
		if err := rows.Scan(&st.Table, &st.Paused, &at, &st.By); err != nil {
			return nil, fmt.Errorf("sqlite: table states: %w", err)
		}
		st.Since = fromNanos(at)
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: table states: %w", err)
	}
	return out, nil
}
