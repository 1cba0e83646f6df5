package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// GetError returns one error with its occurrences and replays.
func (s *Store) GetError(ctx context.Context, id int64) (storage.ErrorDetail, error) {
	e, err := scanError(s.pool.QueryRow(ctx, `SELECT `+errorColumns+` FROM sync_errors WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return storage.ErrorDetail{}, storage.ErrNotFound
	}
	if err != nil {
		return storage.ErrorDetail{}, fmt.Errorf("postgres: read error %d: %w", id, err)
	}
	d := storage.ErrorDetail{StoredError: e, History: []storage.Occurrence{}, ReplayLog: []storage.Replay{}}
	if err := s.pool.QueryRow(ctx, `SELECT COALESCE(event_headers, '{}'::jsonb) FROM sync_errors WHERE id = $1`, id).Scan(&d.EventHeaders); err != nil {
		return d, fmt.Errorf("postgres: read error %d headers: %w", id, err)
	}
	rows, err := s.pool.Query(ctx, `SELECT message_id, seen_at, delivery FROM sync_error_occurrences WHERE error_id = $1 ORDER BY seen_at`, id)
	if err != nil {
		return d, fmt.Errorf("postgres: read occurrences: %w", err)
	}
	for rows.Next() {
		var o storage.Occurrence
		if err := rows.Scan(&o.MessageID, &o.SeenAt, &o.Delivery); err != nil {
			rows.Close()
			return d, err
		}
		d.History = append(d.History, o)
	}
	rows.Close()
	rows, err = s.pool.Query(ctx, `SELECT attempt, message_id, requested_by, requested_at, outcome FROM sync_error_replays WHERE error_id = $1 ORDER BY attempt`, id)
	if err != nil {
		return d, fmt.Errorf("postgres: read replays: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r storage.Replay
		if err := rows.Scan(&r.Attempt, &r.MessageID, &r.RequestedBy, &r.RequestedAt, &r.Outcome); err != nil {
			return d, err
		}
		d.ReplayLog = append(d.ReplayLog, r)
	}
	return d, rows.Err()
}

// DeleteErrors deletes errors last seen before cutoff (all errors when cutoff is zero) and records
// it in the audit log. Couplings are never touched.
func (s *Store) DeleteErrors(ctx context.Context, cutoff time.Time, actor string) (int64, error) {
	var cut *time.Time
	target := "all errors"
	if !cutoff.IsZero() {
		cut, target = &cutoff, "errors last seen before "+cutoff.UTC().Format(time.RFC3339)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	tag, err := tx.Exec(ctx, `DELETE FROM sync_errors WHERE $1::timestamptz IS NULL OR last_seen < $1`, cut)
	if err != nil {
		return 0, fmt.Errorf("postgres: delete errors: %w", err)
	}
	if err := audit(ctx, tx, actor, "delete", target, tag.RowsAffected()); err != nil {
		return 0, err
	}
	return tag.RowsAffected(), tx.Commit(ctx)
}

func audit(ctx context.Context, tx pgx.Tx, actor, action, target string, affected int64) error {
	if _, err := tx.Exec(ctx, `INSERT INTO audit_log (actor, action, target, affected) VALUES ($1, $2, $3, $4)`,
		actor, action, target, affected); err != nil {
		return fmt.Errorf("postgres: audit: %w", err)
	}
	return nil
}

// ClaimReplay makes the caller the one replay of attempt replays+1 of an error. The claim is one
// statement, so of any number of concurrent requests exactly one wins; the others get
// storage.ErrAlreadyReplaying until the winner releases the claim (its publish failed) or storage.ReplayGrace has
// passed since it claimed (the replayed change is handled by then, or the claimant died).
func (s *Store) ClaimReplay(ctx context.Context, id int64) (storage.ReplayClaim, error) {
	c := storage.ReplayClaim{ErrorID: id}
	err := s.pool.QueryRow(ctx, `UPDATE sync_errors SET replays = replays + 1, replay_claimed_at = clock_timestamp()
		WHERE id = $1 AND status <> 'resolved' AND length(event) > 0 AND not_replayable IS NULL AND kind <> 'invalid_event'
		  AND (replay_claimed_at IS NULL OR replay_claimed_at < clock_timestamp() - $2::interval)
		RETURNING replays, replay_claimed_at, table_name, source_key, event, COALESCE(event_headers, '{}'::jsonb), event_version,
			COALESCE(delivery->>'subject', '')`, id, storage.ReplayGrace.String()).
		Scan(&c.Attempt, &c.ClaimedAt, &c.Table, &c.Key, &c.Event, &c.EventHeaders, &c.EventVersion, &c.Subject)
	if err == nil {
		return c, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return c, fmt.Errorf("postgres: claim replay of %d: %w", id, err)
	}
	// Not claimed: say why.
	var (
		status        storage.ErrorStatus
		kind          string
		hasEvent      bool
		notReplayable *string
	)
	err = s.pool.QueryRow(ctx, `SELECT status, kind, length(event) > 0 IS TRUE, not_replayable FROM sync_errors WHERE id = $1`, id).
		Scan(&status, &kind, &hasEvent, &notReplayable)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return c, storage.ErrNotFound
	case err != nil:
		return c, fmt.Errorf("postgres: read error %d: %w", id, err)
	case status == storage.ErrorResolved:
		return c, &storage.NotReplayableError{Reason: storage.ReasonResolved}
	case kind == string(domain.KindInvalidEvent):
		return c, &storage.NotReplayableError{Reason: storage.ReasonInvalid}
	case notReplayable != nil:
		return c, &storage.NotReplayableError{Reason: *notReplayable}
	case !hasEvent:
		return c, &storage.NotReplayableError{Reason: storage.ReasonNoChange}
	}
	return c, storage.ErrAlreadyReplaying
}

// ReleaseReplay gives up a claim whose change was not published, so that the next request may
// replay at once.
func (s *Store) ReleaseReplay(ctx context.Context, c storage.ReplayClaim) error {
	if _, err := s.pool.Exec(ctx, `UPDATE sync_errors SET replay_claimed_at = NULL WHERE id = $1 AND replay_claimed_at = $2`,
		c.ErrorID, c.ClaimedAt); err != nil {
		return fmt.Errorf("postgres: release replay of %d: %w", c.ErrorID, err)
	}
	return nil
}

// FinishReplay records a replay's outcome: "published" moves the error to replayed, "stale" (a
// newer version synced since) resolves it; either only while the claim holds, since a newer
// occurrence that reopened the error meanwhile ended it and is the error's state now (a stale
// replay of v4 must not resolve the error that now keeps v6). Either way the replay and the audit
// entry are kept.
func (s *Store) FinishReplay(ctx context.Context, c storage.ReplayClaim, messageID, actor, outcome string) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	switch outcome {
	case "published":
		_, err = tx.Exec(ctx, `UPDATE sync_errors SET status = 'replayed' WHERE id = $1 AND status = 'open' AND replay_claimed_at = $2`,
			c.ErrorID, c.ClaimedAt)
	case "stale":
		_, err = tx.Exec(ctx, `UPDATE sync_errors SET status = 'resolved', resolved_at = now(), replay_claimed_at = NULL,
			resolved_reason = $3 WHERE id = $1 AND replay_claimed_at = $2`,
			c.ErrorID, c.ClaimedAt, storage.ReasonStaleReplay)
	}
	if err != nil {
		return fmt.Errorf("postgres: finish replay of %d: %w", c.ErrorID, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO sync_error_replays (error_id, attempt, message_id, requested_by, outcome)
		VALUES ($1, $2, $3, $4, $5)`, c.ErrorID, c.Attempt, messageID, actor, outcome); err != nil {
		return fmt.Errorf("postgres: record replay of %d: %w", c.ErrorID, err)
	}
	if err := audit(ctx, tx, actor, "replay", fmt.Sprintf("error %d (%s/%s) attempt %d: %s", c.ErrorID, c.Table, c.Key, c.Attempt, outcome), 1); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// Audit returns the newest audit entries.
func (s *Store) Audit(ctx context.Context, limit int) ([]storage.AuditEntry, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, at, actor, action, target, affected FROM audit_log ORDER BY id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: read audit log: %w", err)
	}
	defer rows.Close()
	out := []storage.AuditEntry{}
	for rows.Next() {
		var a storage.AuditEntry
		if err := rows.Scan(&a.ID, &a.At, &a.Actor, &a.Action, &a.Target, &a.Affected); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// Status sums up every table that has couplings or errors.
func (s *Store) Status(ctx context.Context) ([]storage.TableStatus, error) {
	rows, err := s.pool.Query(ctx, `
		WITH c AS (
			SELECT table_name, count(*) FILTER (WHERE status = 'synced') AS synced,
			       count(*) FILTER (WHERE status = 'failed') AS failed,
			       count(*) FILTER (WHERE skipped) AS skipped, max(last_synced_at) AS last_synced
			FROM couplings GROUP BY table_name),
		e AS (
			SELECT table_name, count(*) FILTER (WHERE class = 'coupling') AS coupling,
			       count(*) FILTER (WHERE class = 'setup') AS setup
			FROM sync_errors WHERE status IN ('open', 'replayed') GROUP BY table_name)
		SELECT COALESCE(c.table_name, e.table_name), COALESCE(c.synced, 0), COALESCE(c.failed, 0), COALESCE(c.skipped, 0),
		       c.last_synced, COALESCE(e.coupling, 0), COALESCE(e.setup, 0)
		FROM c FULL OUTER JOIN e ON c.table_name = e.table_name ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("postgres: status: %w", err)
	}
	defer rows.Close()
	out := []storage.TableStatus{}
	for rows.Next() {
		var t storage.TableStatus
		var coupling, setup int
		if err := rows.Scan(&t.Table, &t.Synced, &t.Failed, &t.Skipped, &t.LastSyncedAt, &coupling, &setup); err != nil {
			return nil, err
		}
		t.OpenErrors = map[string]int{"coupling": coupling, "setup": setup}
		out = append(out, t)
	}
	return out, rows.Err()
}

// DeleteError deletes one error and records it in the audit log; its coupling stays.
func (s *Store) DeleteError(ctx context.Context, id int64, actor string) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	var table, key string
	err = tx.QueryRow(ctx, `DELETE FROM sync_errors WHERE id = $1 RETURNING table_name, source_key`, id).Scan(&table, &key)
	if errors.Is(err, pgx.ErrNoRows) {
		return storage.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("postgres: delete error %d: %w", id, err)
	}
	if err := audit(ctx, tx, actor, "delete", fmt.Sprintf("error %d (%s/%s)", id, table, key), 1); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// ListCouplings lists couplings, the most recently changed first.
func (s *Store) ListCouplings(ctx context.Context, f storage.CouplingFilter) ([]domain.Coupling, error) {
	f.Limit = storage.CouplingLimit(f.Limit)
	rows, err := s.pool.Query(ctx, `SELECT table_name, source_key, `+couplingColumns+` FROM couplings
		WHERE ($1 = '' OR table_name = $1) AND ($2 = '' OR status = $2) AND (NOT $3 OR skipped)
		  AND ($4 = '' OR strpos(lower(source_key), lower($4)) > 0)
		ORDER BY updated_at DESC LIMIT $5`, f.Table, string(f.Status), f.Skipped, f.Text, f.Limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: list couplings: %w", err)
	}
	defer rows.Close()
	out := []domain.Coupling{}
	for rows.Next() {
		var c domain.Coupling
		if err := scanCoupling(rows, &c, &c.Table, &c.Key); err != nil {
			return nil, fmt.Errorf("postgres: read coupling row: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
