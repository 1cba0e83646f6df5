package postgres

import (
	"context"
	"fmt"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// CountLedger counts the open errors (open or being replayed) by class and kind with the first
// sighting of the oldest, and the skipped records by table, for the metrics
// (telemetry.LedgerCounter). Each is one grouped query that reads only a partial index
// (migration 00010).
func (s *Store) CountLedger(ctx context.Context) (storage.LedgerCounts, error) {
	out := storage.LedgerCounts{Skipped: map[string]int{}}
	rows, err := s.pool.Query(ctx, `SELECT class, kind, count(*), min(first_seen) FROM sync_errors
		WHERE status IN ('open', 'replayed') GROUP BY class, kind`)
	if err != nil {
		return out, fmt.Errorf("postgres: count open errors: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var o storage.OpenErrors
		var class, kind string
		if err := rows.Scan(&class, &kind, &o.Count, &o.Oldest); err != nil {
			return out, fmt.Errorf("postgres: count open errors: %w", err)
		}
		o.Class, o.Kind = domain.Class(class), domain.Kind(kind)
		out.Open = append(out.Open, o)
	}
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("postgres: count open errors: %w", err)
	}
	rows, err = s.pool.Query(ctx, `SELECT table_name, count(*) FROM couplings WHERE skipped GROUP BY table_name`)
	if err != nil {
		return out, fmt.Errorf("postgres: count skipped records: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var table string
		var n int
		if err := rows.Scan(&table, &n); err != nil {
			return out, fmt.Errorf("postgres: count skipped records: %w", err)
		}
		out.Skipped[table] = n
	}
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("postgres: count skipped records: %w", err)
	}
	return out, nil
}
