package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/dvsync/dvsync/domain"
)

// CouplingOfRow returns the record coupled to a row of the entity (synced or failed), for
// match-based coupling; Exists is false when none is.
func (s *Store) CouplingOfRow(ctx context.Context, entity string, row uuid.UUID) (domain.Coupling, error) {
	var c domain.Coupling
	err := scanCoupling(s.pool.QueryRow(ctx, `SELECT table_name, source_key, `+couplingColumns+` FROM couplings
		WHERE entity = $1 AND row_id = $2 AND status IN ('synced', 'failed')
		ORDER BY table_name, source_key LIMIT 1`, entity, row), &c, &c.Table, &c.Key)
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.Coupling{Version: domain.NoVersion}, nil
	}
	if err != nil {
		return domain.Coupling{}, fmt.Errorf("postgres: coupling of %s row %s: %w", entity, row, err)
	}
	return c, nil
}
