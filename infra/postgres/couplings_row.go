package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/dvsync/dvsync/domain"
)

// CouplingOfRow returns the record coupled to a Dataverse row (its coupling synced or failed);
// false when none is.
func (s *Store) CouplingOfRow(ctx context.Context, entity string, rowID uuid.UUID) (domain.Coupling, bool, error) {
	var c domain.Coupling
	err := scanCoupling(s.pool.QueryRow(ctx, `SELECT table_name, source_key, `+couplingColumns+` FROM couplings
		WHERE row_id = $1 AND entity = $2 AND status IN ('synced', 'failed') ORDER BY updated_at DESC LIMIT 1`, rowID, entity),
		&c, &c.Table, &c.Key)
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.Coupling{}, false, nil
	}
	if err != nil {
		return domain.Coupling{}, false, fmt.Errorf("postgres: coupling of %s row %s: %w", entity, rowID, err)
	}
	return c, true, nil
}
