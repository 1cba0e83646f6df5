package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
)

// CouplingOfRow returns the record coupled to a Dataverse row (its coupling synced or failed);
// false when none is.
func (s *Store) CouplingOfRow(ctx context.Context, entity string, rowID uuid.UUID) (domain.Coupling, bool, error) {
	if s.isClosed() {
		return domain.Coupling{}, false, closedErr
	}
	var c domain.Coupling
	err := scanCoupling(s.db.QueryRowContext(ctx, `SELECT table_name, source_key, `+couplingColumns+` FROM couplings
		WHERE row_id = ? AND entity = ? AND status IN ('synced', 'failed') ORDER BY updated_at DESC LIMIT 1`, rowID.String(), entity),
		&c, &c.Table, &c.Key)
	if errors.Is(err, sql.ErrNoRows) {
		return domain.Coupling{}, false, nil
	}
	if err != nil {
		return domain.Coupling{}, false, fmt.Errorf("sqlite: coupling of %s row %s: %w", entity, rowID, err)
	}
	return c, true, nil
}
