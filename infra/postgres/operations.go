package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dvsync/dvsync/domain"
)

// ErrNotFound is an error id the ledger does not have.
var ErrNotFound = errors.New("postgres: no such error")

// Occurrence is one error event stored into an error.
type Occurrence struct {
	MessageID string          `json:"message_id"`
	SeenAt    time.Time       `json:"seen_at"`
	Delivery  domain.Delivery `json:"delivery"`
}

// Replay is one replay of an error.
type Replay struct {
	Attempt     int       `json:"attempt"`
	MessageID   string    `json:"message_id"`
	RequestedBy string    `json:"requested_by"`
	RequestedAt time.Time `json:"requested_at"`
	Outcome     string    `json:"outcome"`
}

// ErrorDetail is one error in full, with its history.
type ErrorDetail struct {
	StoredError
	EventHeaders map[string][]string `json:"event_headers,omitempty"`
	History      []Occurrence        `json:"occurrences_history"`
	ReplayLog    []Replay            `json:"replays_history"`
}

// GetError returns one error with its occurrences and replays.
func (s *Store) GetError(ctx context.Context, id int64) (ErrorDetail, error) {
	e, err := scanError(s.pool.QueryRow(ctx, `SELECT `+errorColumns+` FROM sync_errors WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrorDetail{}, ErrNotFound
	}
	if err != nil {
		return ErrorDetail{}, fmt.Errorf("postgres: read error %d: %w", id, err)
	}
	d := ErrorDetail{StoredError: e, History: []Occurrence{}, ReplayLog: []Replay{}}
	if err := s.pool.QueryRow(ctx, `SELECT COALESCE(event_headers, '{}'::jsonb) FROM sync_errors WHERE id = $1`, id).Scan(&d.EventHeaders); err != nil {
		return d, fmt.Errorf("postgres: read error %d headers: %w", id, err)
	}
	rows, err := s.pool.Query(ctx, `SELECT message_id, seen_at, delivery FROM sync_error_occurrences WHERE error_id = $1 ORDER BY seen_at`, id)
	if err != nil {
		return d, fmt.Errorf("postgres: read occurrences: %w", err)
	}
	for rows.Next() {
		var o Occurrence
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
		var r Replay
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

// ReplayClaim is an error one replay request won, with what it needs to publish the change again.
type ReplayClaim struct {
	ErrorID      int64
	Attempt      int
	ClaimedAt    time.Time // the claim itself: FinishReplay and ReleaseReplay act only while it holds
	Table, Key   string
	Subject      string // where the change was first published
	Event        []byte
	EventHeaders map[string][]string
	EventVersion *int64
}

// replayGrace is how long a claimed or published replay counts as under way.
const replayGrace = 30 * time.Second

// ErrAlreadyReplaying is a replay that lost to a concurrent one of the same error.
var ErrAlreadyReplaying = errors.New("postgres: the error is being replayed by another request")

// ErrNotReplayable is an error whose change cannot be sent again; the NotReplayableError that
// wraps it says why.
var ErrNotReplayable = errors.New("postgres: the error has no change to replay or is resolved")

// NotReplayableError says why an error is not replayed; it matches ErrNotReplayable.
type NotReplayableError struct{ Reason string }

func (e *NotReplayableError) Error() string        { return "postgres: not replayable: " + e.Reason }
func (e *NotReplayableError) Is(target error) bool { return target == ErrNotReplayable }

// Reasons an error is not replayed, besides the one stored with it (not_replayable).
const (
	reasonResolved = "the error is resolved"
	reasonNoChange = "the error keeps no change to send"
	reasonInvalid  = "an invalid event is not replayed: it would fail the same way; the publisher must send a corrected event"
)

// ClaimReplay makes the caller the one replay of attempt replays+1 of an error. The claim is one
// statement, so of any number of concurrent requests exactly one wins; the others get
// ErrAlreadyReplaying until the winner releases the claim (its publish failed) or replayGrace has
// passed since it claimed (the replayed change is handled by then, or the claimant died).
func (s *Store) ClaimReplay(ctx context.Context, id int64) (ReplayClaim, error) {
	c := ReplayClaim{ErrorID: id}
	err := s.pool.QueryRow(ctx, `UPDATE sync_errors SET replays = replays + 1, replay_claimed_at = clock_timestamp()
		WHERE id = $1 AND status <> 'resolved' AND length(event) > 0 AND not_replayable IS NULL AND kind <> 'invalid_event'
		  AND (replay_claimed_at IS NULL OR replay_claimed_at < clock_timestamp() - $2::interval)
		RETURNING replays, replay_claimed_at, table_name, source_key, event, COALESCE(event_headers, '{}'::jsonb), event_version,
			COALESCE(delivery->>'subject', '')`, id, replayGrace.String()).
		Scan(&c.Attempt, &c.ClaimedAt, &c.Table, &c.Key, &c.Event, &c.EventHeaders, &c.EventVersion, &c.Subject)
	if err == nil {
		return c, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return c, fmt.Errorf("postgres: claim replay of %d: %w", id, err)
	}
	// Not claimed: say why.
	var (
		status        ErrorStatus
		kind          string
		hasEvent      bool
		notReplayable *string
	)
	err = s.pool.QueryRow(ctx, `SELECT status, kind, length(event) > 0 IS TRUE, not_replayable FROM sync_errors WHERE id = $1`, id).
		Scan(&status, &kind, &hasEvent, &notReplayable)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return c, ErrNotFound
	case err != nil:
		return c, fmt.Errorf("postgres: read error %d: %w", id, err)
	case status == ErrorResolved:
		return c, &NotReplayableError{Reason: reasonResolved}
	case kind == string(domain.KindInvalidEvent):
		return c, &NotReplayableError{Reason: reasonInvalid}
	case notReplayable != nil:
		return c, &NotReplayableError{Reason: *notReplayable}
	case !hasEvent:
		return c, &NotReplayableError{Reason: reasonNoChange}
	}
	return c, ErrAlreadyReplaying
}

// ReleaseReplay gives up a claim whose change was not published, so that the next request may
// replay at once.
func (s *Store) ReleaseReplay(ctx context.Context, c ReplayClaim) error {
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
func (s *Store) FinishReplay(ctx context.Context, c ReplayClaim, messageID, actor, outcome string) error {
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
			resolved_reason = 'replay not sent: a newer version of the record synced since' WHERE id = $1 AND replay_claimed_at = $2`,
			c.ErrorID, c.ClaimedAt)
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

// AuditEntry is one line of the audit log.
type AuditEntry struct {
	ID       int64     `json:"id"`
	At       time.Time `json:"at"`
	Actor    string    `json:"actor"`
	Action   string    `json:"action"`
	Target   string    `json:"target"`
	Affected int       `json:"affected"`
}

// Audit returns the newest audit entries.
func (s *Store) Audit(ctx context.Context, limit int) ([]AuditEntry, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, at, actor, action, target, affected FROM audit_log ORDER BY id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: read audit log: %w", err)
	}
	defer rows.Close()
	out := []AuditEntry{}
	for rows.Next() {
		var a AuditEntry
		if err := rows.Scan(&a.ID, &a.At, &a.Actor, &a.Action, &a.Target, &a.Affected); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// TableStatus sums up one table's couplings and open errors.
type TableStatus struct {
	Table        string         `json:"table"`
	Synced       int            `json:"synced"`
	Failed       int            `json:"failed"`
	Skipped      int            `json:"skipped"`
	OpenErrors   map[string]int `json:"open_errors"` // by class
	LastSyncedAt *time.Time     `json:"last_synced_at,omitempty"`
	ConsumerLag  *uint64        `json:"consumer_lag,omitempty"`
}

// Status sums up every table that has couplings or errors.
func (s *Store) Status(ctx context.Context) ([]TableStatus, error) {
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
	out := []TableStatus{}
	for rows.Next() {
		var t TableStatus
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
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("postgres: delete error %d: %w", id, err)
	}
	if err := audit(ctx, tx, actor, "delete", fmt.Sprintf("error %d (%s/%s)", id, table, key), 1); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// CouplingFilter narrows ListCouplings.
type CouplingFilter struct {
	Table   string
	Status  domain.CouplingStatus
	Skipped bool
	Text    string // in the key
	Limit   int
}

// ListCouplings lists couplings, the most recently changed first.
func (s *Store) ListCouplings(ctx context.Context, f CouplingFilter) ([]domain.Coupling, error) {
	if f.Limit <= 0 || f.Limit > 1000 {
		f.Limit = 200
	}
	rows, err := s.pool.Query(ctx, `SELECT table_name, source_key, `+couplingColumns+` FROM couplings
		WHERE ($1 = '' OR table_name = $1) AND ($2 = '' OR status = $2) AND (NOT $3 OR skipped)
		  AND ($4 = '' OR source_key ILIKE '%' || $4 || '%')
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
