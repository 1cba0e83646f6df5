package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/dvsync/dvsync/infra/storage"
)

// PauseTable pauses a table; the change and its audit entry are one transaction.
func (s *Store) PauseTable(ctx context.Context, table, actor string) (bool, error) {
	return s.setPause(ctx, table, actor, true, 0)
}

// ResumeTable resumes a paused table, keeping its backlog at resume for the catch-up's progress.
func (s *Store) ResumeTable(ctx context.Context, table, actor string, backlog uint64) (bool, error) {
	return s.setPause(ctx, table, actor, false, backlog)
}

func (s *Store) setPause(ctx context.Context, table, actor string, paused bool, backlog uint64) (bool, error) {
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
			b := int64(min(backlog, 1<<62))
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
		if paused {
			// A pause ends the table's backlog period: what waits now is not a load or a catch-up.
			if _, err := s.endBacklog(ctx, tx, table); err != nil {
				return fmt.Errorf("sqlite: %s %s: %w", action, table, err)
			}
		}
		target := table
		if !paused {
			target = fmt.Sprintf("%s (%d changes waiting)", table, backlog)
		}
		return s.audit(ctx, tx, actor, action, target, 1)
	})
	return changed, err
}

// CaughtUp ends a resumed table's catch-up.
func (s *Store) CaughtUp(ctx context.Context, table string) (bool, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE table_pauses SET catching_up = 0 WHERE table_name = ? AND catching_up AND NOT paused`, table)
	if err != nil {
		return false, fmt.Errorf("sqlite: caught up %s: %w", table, err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// TableStates are the tables ever paused.
func (s *Store) TableStates(ctx context.Context) ([]storage.TableState, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT table_name, paused, changed_at, changed_by, catching_up, resume_backlog
		FROM table_pauses ORDER BY table_name`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: table states: %w", err)
	}
	defer rows.Close()
	var out []storage.TableState
	for rows.Next() {
		var st storage.TableState
		var at sql.NullInt64
		var backlog int64
		if err := rows.Scan(&st.Table, &st.Paused, &at, &st.By, &st.CatchingUp, &backlog); err != nil {
			return nil, fmt.Errorf("sqlite: table states: %w", err)
		}
		st.Since, st.ResumeBacklog = fromNanos(at), uint64(max(backlog, 0))
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: table states: %w", err)
	}
	return out, nil
}
