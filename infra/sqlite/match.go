package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
)

// CouplingOfRow returns the record coupled to a row of the entity (synced or failed), for
// match-based coupling; Exists is false when none is.
func (s *Store) CouplingOfRow(ctx context.Context, entity string, row uuid.UUID) (domain.Coupling, error) {
	if s.isClosed() {
		return domain.Coupling{}, closedErr
	}
	var c domain.Coupling
	err := scanCoupling(s.db.QueryRowContext(ctx, `SELECT table_name, source_key, `+couplingColumns+` FROM couplings
		WHERE entity = ? AND row_id = ? AND status IN ('synced', 'failed')
		ORDER BY table_name, source_key LIMIT 1`, entity, row.String()), &c, &c.Table, &c.Key)
	if errors.Is(err, sql.ErrNoRows) {
		return domain.Coupling{Version: domain.NoVersion}, nil
	}
	if err != nil {
		return domain.Coupling{}, fmt.Errorf("sqlite: coupling of %s row %s: %w", entity, row, err)
	}
	return c, nil
}
