package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
)

var _ domain.ErrorLedger = (*Store)(nil)

// ErrorStatus is where a stored error stands.
type ErrorStatus string

const (
	ErrorOpen     ErrorStatus = "open"
	ErrorResolved ErrorStatus = "resolved"
	ErrorReplayed ErrorStatus = "replayed"
)

// RecordError stores one error event. A redelivered event (same id) changes nothing; a new
// occurrence of an open error of the same record and kind adds to it. An error of a version
// that has synced since (it reached the projector late) is stored as resolved.
func (s *Store) RecordError(ctx context.Context, ev domain.ErrorEvent) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op

	delivery, _ := json.Marshal(ev.Delivery)
	// The occurrence goes first: a concurrent projector with the same event waits on its key.
	tag, err := tx.Exec(ctx, `INSERT INTO sync_error_occurrences (message_id, seen_at, delivery)
		VALUES ($1, $2, $3) ON CONFLICT (message_id) DO NOTHING`, ev.ID, ev.OccurredAt, delivery)
	if err != nil {
		return fmt.Errorf("postgres: record occurrence %s: %w", ev.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return tx.Commit(ctx) // seen before
	}

	status, resolvedAt, reason := ErrorOpen, (*time.Time)(nil), (*string)(nil)
	if ev.EventVersion != nil {
		c, err := readCoupling(ctx, tx, ev.Table, ev.Key, "")
		if err != nil {
			return err
		}
		if c.Status == domain.CouplingSynced && c.Version >= *ev.EventVersion {
			now, why := time.Now().UTC(), fmt.Sprintf("version %d synced before this error was stored", c.Version)
			status, resolvedAt, reason = ErrorResolved, &now, &why
		}
	}
	details, _ := json.Marshal(ev.Details)
	stack, _ := json.Marshal(ev.CallStack)
	headers, _ := json.Marshal(ev.EventHeaders)
	var dvStatus *int
	var dvCode, dvMessage *string
	if dv := ev.Dataverse; dv != nil {
		dvStatus, dvCode, dvMessage = &dv.Status, &dv.Code, &dv.Message
	}
	var row *uuid.UUID
	if id, err := uuid.Parse(ev.RowID); err == nil {
		row = &id
	}
	args := []any{string(ev.Class), string(ev.Kind), ev.Table, ev.Key, ev.Message, ev.Resolution, details,
		dvStatus, dvCode, dvMessage, stack, ev.Stage, ev.Event, headers, ev.EventID, ev.EventVersion, ev.Entity, row,
		delivery, ev.OccurredAt, string(status), resolvedAt, reason}
	const insert = `INSERT INTO sync_errors (class, kind, table_name, source_key, message, resolution, details,
			dataverse_status, dataverse_code, dataverse_message, call_stack, stage, event, event_headers, event_id,
			event_version, entity, row_id, delivery, first_seen, last_seen, status, resolved_at, resolved_reason)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $20, $21, $22, $23)`
	var id int64
	if status == ErrorOpen {
		// The newest occurrence's details win: they describe the error as it is now. A change of a
		// skipped record (stage 'skipped') keeps the error's own description and brings only the
		// newest change, which a retry sends.
		err = tx.QueryRow(ctx, insert+`
		ON CONFLICT (table_name, source_key, kind) WHERE status IN ('open', 'replayed') DO UPDATE SET
			status = 'open', -- a replayed change that failed again
			occurrences = sync_errors.occurrences + 1,
			first_seen = LEAST(sync_errors.first_seen, EXCLUDED.first_seen),
			last_seen = GREATEST(sync_errors.last_seen, EXCLUDED.last_seen),
			class = EXCLUDED.class,
			message = CASE WHEN EXCLUDED.stage = 'skipped' THEN sync_errors.message ELSE EXCLUDED.message END,
			resolution = CASE WHEN EXCLUDED.stage = 'skipped' THEN sync_errors.resolution ELSE EXCLUDED.resolution END,
			details = CASE WHEN EXCLUDED.stage = 'skipped' THEN sync_errors.details || EXCLUDED.details ELSE EXCLUDED.details END,
			dataverse_status = CASE WHEN EXCLUDED.stage = 'skipped' THEN sync_errors.dataverse_status ELSE EXCLUDED.dataverse_status END,
			dataverse_code = CASE WHEN EXCLUDED.stage = 'skipped' THEN sync_errors.dataverse_code ELSE EXCLUDED.dataverse_code END,
			dataverse_message = CASE WHEN EXCLUDED.stage = 'skipped' THEN sync_errors.dataverse_message ELSE EXCLUDED.dataverse_message END,
			call_stack = CASE WHEN EXCLUDED.stage = 'skipped' THEN sync_errors.call_stack ELSE EXCLUDED.call_stack END,
			stage = EXCLUDED.stage, event = EXCLUDED.event,
			event_headers = EXCLUDED.event_headers, event_id = EXCLUDED.event_id,
			event_version = EXCLUDED.event_version, entity = EXCLUDED.entity, row_id = EXCLUDED.row_id,
			delivery = EXCLUDED.delivery
		RETURNING id`, args...).Scan(&id)
	} else {
		err = tx.QueryRow(ctx, insert+` RETURNING id`, args...).Scan(&id)
	}
	if err != nil {
		return fmt.Errorf("postgres: record error %s/%s %s: %w", ev.Table, ev.Key, ev.Kind, err)
	}
	if _, err := tx.Exec(ctx, `UPDATE sync_error_occurrences SET error_id = $1 WHERE message_id = $2`, id, ev.ID); err != nil {
		return fmt.Errorf("postgres: link occurrence %s: %w", ev.ID, err)
	}
	return tx.Commit(ctx)
}

// WaitingOn returns the open errors of records that failed because the dependency table/key
// was not coupled, oldest first, at most limit of them.
func (s *Store) WaitingOn(ctx context.Context, table, key string, limit int) ([]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT id FROM sync_errors
		WHERE status = 'open' AND kind = 'dependency_not_coupled'
		  AND details->>'dependency_table' = $1 AND details->>'dependency_key' = $2
		ORDER BY first_seen, id LIMIT $3`, table, key, limit) // literals, so the partial index matches
	if err != nil {
		return nil, fmt.Errorf("errors waiting on %s %s: %w", table, key, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("errors waiting on %s %s: %w", table, key, err)
	}
	return ids, nil
}

// ResolveRecord resolves the open and replayed errors of a record up to the synced version.
func (s *Store) ResolveRecord(ctx context.Context, synced domain.RecordSynced) error {
	_, err := s.pool.Exec(ctx, `UPDATE sync_errors SET status = 'resolved', resolved_at = $4,
			resolved_reason = 'the record synced version ' || $3::bigint
		WHERE table_name = $1 AND source_key = $2 AND status IN ('open', 'replayed')
		  AND (event_version IS NULL OR event_version <= $3)`,
		synced.Table, synced.Key, synced.Version, synced.At)
	if err != nil {
		return fmt.Errorf("postgres: resolve %s/%s: %w", synced.Table, synced.Key, err)
	}
	return nil
}

// StoredError is one row of the errors ledger.
type StoredError struct {
	ID               int64             `json:"id"`
	Class            domain.Class      `json:"class"`
	Kind             domain.Kind       `json:"kind"`
	Table            string            `json:"table"`
	Key              string            `json:"key"`
	Message          string            `json:"message"`
	Resolution       string            `json:"resolution"`
	Details          map[string]string `json:"details"`
	DataverseStatus  *int              `json:"dataverse_status,omitempty"`
	DataverseCode    *string           `json:"dataverse_code,omitempty"`
	DataverseMessage *string           `json:"dataverse_message,omitempty"`
	CallStack        []domain.Stage    `json:"call_stack"`
	Stage            string            `json:"stage"`
	Event            []byte            `json:"event"`
	EventID          *string           `json:"event_id,omitempty"`
	EventVersion     *int64            `json:"event_version,omitempty"`
	Entity           *string           `json:"entity,omitempty"`
	RowID            *uuid.UUID        `json:"row_id,omitempty"`
	Delivery         domain.Delivery   `json:"delivery"`
	FirstSeen        time.Time         `json:"first_seen"`
	LastSeen         time.Time         `json:"last_seen"`
	Occurrences      int               `json:"occurrences"`
	Status           ErrorStatus       `json:"status"`
	ResolvedAt       *time.Time        `json:"resolved_at,omitempty"`
	ResolvedReason   *string           `json:"resolved_reason,omitempty"`
	Replays          int               `json:"replays"`
}

// ErrorFilter narrows ListErrors; empty fields match everything.
type ErrorFilter struct {
	Class  domain.Class
	Kind   domain.Kind
	Status ErrorStatus
	Table  string
	Key    string
	Text   string    // in the message, key or table, without regard to case
	Since  time.Time // last seen at or after
	Until  time.Time // last seen before
	Limit  int
	Cursor string // from the previous page's Next
}

// ErrorPage is one page of errors, newest first; Next is the cursor of the next page ("" at the end).
type ErrorPage struct {
	Errors []StoredError `json:"errors"`
	Next   string        `json:"next,omitempty"`
}

const errorColumns = `id, class, kind, table_name, source_key, message, resolution, details,
	dataverse_status, dataverse_code, dataverse_message, call_stack, stage, event, event_id, event_version,
	entity, row_id, delivery, first_seen, last_seen, occurrences, status, resolved_at, resolved_reason, replays`

func scanError(row pgx.Row) (StoredError, error) {
	var e StoredError
	err := row.Scan(&e.ID, &e.Class, &e.Kind, &e.Table, &e.Key, &e.Message, &e.Resolution, &e.Details,
		&e.DataverseStatus, &e.DataverseCode, &e.DataverseMessage, &e.CallStack, &e.Stage, &e.Event, &e.EventID,
		&e.EventVersion, &e.Entity, &e.RowID, &e.Delivery, &e.FirstSeen, &e.LastSeen, &e.Occurrences, &e.Status,
		&e.ResolvedAt, &e.ResolvedReason, &e.Replays)
	return e, err
}

// ErrBadCursor is a cursor that no page gave.
var ErrBadCursor = errors.New("postgres: the cursor is not one this API gave")

// PageErrors returns one page of errors, newest first.
func (s *Store) PageErrors(ctx context.Context, f ErrorFilter) (ErrorPage, error) {
	if f.Limit <= 0 || f.Limit > 1000 {
		f.Limit = 100
	}
	var since, until, afterSeen *time.Time
	var afterID int64
	if !f.Since.IsZero() {
		since = &f.Since
	}
	if !f.Until.IsZero() {
		until = &f.Until
	}
	if f.Cursor != "" {
		nanos, id, ok := strings.Cut(f.Cursor, "_")
		n, err1 := strconv.ParseInt(nanos, 10, 64)
		i, err2 := strconv.ParseInt(id, 10, 64)
		if !ok || err1 != nil || err2 != nil {
			return ErrorPage{}, ErrBadCursor
		}
		t := time.Unix(0, n).UTC()
		afterSeen, afterID = &t, i
	}
	rows, err := s.pool.Query(ctx, `SELECT `+errorColumns+` FROM sync_errors
		WHERE ($1 = '' OR class = $1) AND ($2 = '' OR kind = $2) AND ($3 = '' OR status = $3)
		  AND ($4 = '' OR table_name = $4) AND ($5 = '' OR source_key = $5)
		  AND ($6 = '' OR message ILIKE '%' || $6 || '%' OR source_key ILIKE '%' || $6 || '%' OR table_name ILIKE '%' || $6 || '%')
		  AND ($7::timestamptz IS NULL OR last_seen >= $7) AND ($8::timestamptz IS NULL OR last_seen < $8)
		  AND ($9::timestamptz IS NULL OR (last_seen, id) < ($9, $10))
		ORDER BY last_seen DESC, id DESC LIMIT $11`,
		string(f.Class), string(f.Kind), string(f.Status), f.Table, f.Key, f.Text, since, until, afterSeen, afterID, f.Limit+1)
	if err != nil {
		return ErrorPage{}, fmt.Errorf("postgres: list errors: %w", err)
	}
	defer rows.Close()
	page := ErrorPage{Errors: []StoredError{}}
	for rows.Next() {
		e, err := scanError(rows)
		if err != nil {
			return ErrorPage{}, fmt.Errorf("postgres: read error row: %w", err)
		}
		page.Errors = append(page.Errors, e)
	}
	if err := rows.Err(); err != nil {
		return ErrorPage{}, err
	}
	if len(page.Errors) > f.Limit {
		page.Errors = page.Errors[:f.Limit]
		last := page.Errors[f.Limit-1]
		page.Next = fmt.Sprintf("%d_%d", last.LastSeen.UnixNano(), last.ID)
	}
	return page, nil
}

// ListErrors returns the first page of errors, newest first.
func (s *Store) ListErrors(ctx context.Context, f ErrorFilter) ([]StoredError, error) {
	page, err := s.PageErrors(ctx, f)
	return page.Errors, err
}
