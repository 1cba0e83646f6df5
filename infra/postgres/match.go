package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

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

// rowClaim is a record's claim on a Dataverse row (domain.RecordLock.ClaimRow): a row of
// row_claims with the token of the record's claim, so that it lives as long as that claim does
// and goes with it (commitBatch, release, storeEdit).
type rowClaim struct {
	claim  *claim
	entity string
	row    uuid.UUID
}

// ClaimRow claims a Dataverse row for the claim's record, checking in the same round trip that no
// other record is coupled to it. The claims of many lanes go to the database together.
func (c *claim) ClaimRow(ctx context.Context, entity string, row uuid.UUID) error {
	if err := c.lease.Check(c.key.table, c.key.key); err != nil {
		return err
	}
	_, err := c.io.rowClaims.Do(ctx, rowClaim{claim: c, entity: entity, row: row})
	return err
}

// rowClaimBatch claims a batch of rows: one round trip, as claimBatch.
func (io *couplingIO) rowClaimBatch(ctx context.Context, rcs []rowClaim) ([]struct{}, []error) {
	errs, err := claimRows(ctx, io.store.pool, rcs)
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
	}
	return make([]struct{}, len(rcs)), errs
}

type batchSender interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// claimRows claims rows in two statements. The first takes each row unless a live claim of
// another record holds it (a claim is live while its token's record claim is); the second, with a
// snapshot taken after the first (so that it sees a coupling committed by whoever held the row
// before), reads who holds each row and which other record is coupled to it. A row coupled to
// another record is a *domain.RowTakenError, one held by another record domain.ErrRowBusy. Rows
// are locked in key order, as the claims and commits lock theirs: no two statements deadlock.
func claimRows(ctx context.Context, q batchSender, rcs []rowClaim) ([]error, error) {
	type rowKey struct {
		entity string
		row    uuid.UUID
	}
	var (
		entities, tables, sources []string
		rows                      []uuid.UUID
		tokens                    []string
		first                     = map[rowKey]bool{} // one statement may not claim a row twice
	)
	for _, rc := range rcs {
		if k := (rowKey{rc.entity, rc.row}); !first[k] {
			first[k] = true
			entities, rows, tokens = append(entities, rc.entity), append(rows, rc.row), append(tokens, rc.claim.token.String())
			tables, sources = append(tables, rc.claim.key.table), append(sources, rc.claim.key.key)
		}
	}
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO row_claims (entity, row_id, token, table_name, source_key)
		SELECT e, r, tok, t, k FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::text[], $5::text[]) AS u(e, r, tok, t, k)
		ORDER BY e, r
		ON CONFLICT (entity, row_id) DO UPDATE SET token = EXCLUDED.token, table_name = EXCLUDED.table_name, source_key = EXCLUDED.source_key
		WHERE row_claims.token = EXCLUDED.token OR NOT EXISTS (
			SELECT 1 FROM record_claims rc WHERE rc.token = row_claims.token AND rc.until > now())`,
		entities, rows, tokens, tables, sources)
	b.Queue(`SELECT u.e, u.r, rc.token::text, c.table_name, c.source_key, c.row_name
		FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[]) AS u(e, r, t, k)
		LEFT JOIN row_claims rc ON rc.entity = u.e AND rc.row_id = u.r
		LEFT JOIN LATERAL (SELECT table_name, source_key, row_name FROM couplings
			WHERE entity = u.e AND row_id = u.r AND status IN ('synced', 'failed') AND (table_name, source_key) <> (u.t, u.k)
			ORDER BY table_name, source_key LIMIT 1) c ON true`, entities, rows, tables, sources)
	res := q.SendBatch(ctx, b)
	defer res.Close()
	if _, err := res.Exec(); err != nil {
		return make([]error, len(rcs)), rejected(fmt.Errorf("postgres: claim rows: %w", err))
	}
	found, err := res.Query()
	if err != nil {
		return make([]error, len(rcs)), fmt.Errorf("postgres: claim rows: %w", err)
	}
	type state struct {
		holder string
		other  *domain.Coupling
	}
	states := map[rowKey]state{}
	for found.Next() {
		var (
			k                   rowKey
			holder, t, key, nam *string
		)
		if err := found.Scan(&k.entity, &k.row, &holder, &t, &key, &nam); err != nil {
			found.Close()
			return make([]error, len(rcs)), fmt.Errorf("postgres: claim rows: %w", err)
		}
		st := state{}
		if holder != nil {
			st.holder = *holder
		}
		if t != nil {
			st.other = &domain.Coupling{Table: *t, Key: *key, Entity: k.entity, RowID: k.row, RowName: *nam, Exists: true}
		}
		states[k] = st
	}
	if err := found.Err(); err != nil {
		return make([]error, len(rcs)), fmt.Errorf("postgres: claim rows: %w", err)
	}
	errs := make([]error, len(rcs))
	for i, rc := range rcs {
		st := states[rowKey{rc.entity, rc.row}]
		switch {
		case st.other != nil:
			errs[i] = &domain.RowTakenError{Entity: rc.entity, Row: rc.row, Other: *st.other}
		case st.holder != rc.claim.token.String():
			errs[i] = fmt.Errorf("%w (%s row %s)", domain.ErrRowBusy, rc.entity, rc.row)
		}
	}
	return errs, nil
}

// isRowTaken reports whether err is the unique index on live couplings refusing a second record
// coupled to one row.
func isRowTaken(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && pg.Code == "23505" && pg.ConstraintName == "couplings_row_live"
}

// rowTaken is the RowTakenError for a coupling the unique index refused: it names the record the
// row is coupled to, read after the refusal (err when it cannot be read).
func (s *Store) rowTaken(ctx context.Context, next *domain.Coupling, err error) error {
	other, rerr := s.CouplingOfRow(ctx, next.Entity, next.RowID)
	if rerr != nil || !other.Exists {
		return err
	}
	return &domain.RowTakenError{Entity: next.Entity, Row: next.RowID, Other: other}
}
