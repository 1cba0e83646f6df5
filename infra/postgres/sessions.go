package postgres

import (
	"context"
	"fmt"
	"time"
)

// EndSession records that the page session id was signed out; expires is when its cookie would
// have expired, after which the row is no longer needed. Expired rows are pruned here.
func (s *Store) EndSession(ctx context.Context, id string, expires time.Time) error {
	if _, err := s.pool.Exec(ctx, `INSERT INTO page_sessions_ended (id, expires_at) VALUES ($1, $2)
		ON CONFLICT (id) DO NOTHING`, id, expires); err != nil {
		return fmt.Errorf("postgres: end session: %w", err)
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM page_sessions_ended WHERE expires_at < now()`); err != nil {
		return fmt.Errorf("postgres: prune ended sessions: %w", err)
	}
	return nil
}

// SessionEnded tells whether the page session id was signed out.
func (s *Store) SessionEnded(ctx context.Context, id string) (bool, error) {
	var ended bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM page_sessions_ended WHERE id = $1)`, id).Scan(&ended); err != nil {
		return false, fmt.Errorf("postgres: read ended sessions: %w", err)
	}
	return ended, nil
}
