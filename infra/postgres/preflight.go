package postgres

import (
	"context"
	"fmt"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// ResolvePreflight resolves the open preflight errors the check looked at and no longer finds
// (storage.Store).
func (s *Store) ResolvePreflight(ctx context.Context, c domain.PreflightChecked) error {
	_, err := s.pool.Exec(ctx, `UPDATE sync_errors SET status = 'resolved', resolved_at = now(), resolved_reason = $4,
			replay_claimed_at = NULL
		WHERE table_name = $1 AND stage = $1 AND status IN ('open', 'replayed')
		  AND source_key = ANY($5::text[]) AND NOT (source_key = ANY($2::text[])) AND last_seen <= $3`,
		domain.PreflightTable, storage.PreflightGaps(c), c.At, storage.PreflightResolved(c), storage.PreflightKeys(c))
	if err != nil {
		return fmt.Errorf("postgres: resolve preflight errors: %w", err)
	}
	return nil
}
