package sqlite

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// ResolvePreflight resolves the open preflight errors the check looked at and no longer finds
// (storage.Store).
func (s *Store) ResolvePreflight(ctx context.Context, c domain.PreflightChecked) error {
	gaps, err := json.Marshal(storage.PreflightGaps(c))
	if err != nil {
		return fmt.Errorf("sqlite: resolve preflight errors: %w", err)
	}
	keys, err := json.Marshal(storage.PreflightKeys(c))
	if err != nil {
		return fmt.Errorf("sqlite: resolve preflight errors: %w", err)
	}
	_, err = s.db.ExecContext(ctx, `UPDATE sync_errors SET status = 'resolved', resolved_at = ?1, resolved_reason = ?5,
			replay_claimed_at = NULL
		WHERE table_name = ?2 AND stage = ?2 AND status IN ('open', 'replayed')
		  AND source_key IN (SELECT value FROM json_each(?6)) AND source_key NOT IN (SELECT value FROM json_each(?3))
		  AND last_seen <= ?4`,
		s.now().UnixNano(), domain.PreflightTable, string(gaps), c.At.UnixNano(), storage.PreflightResolved(c), string(keys))
	if err != nil {
		return fmt.Errorf("sqlite: resolve preflight errors: %w", err)
	}
	return nil
}
