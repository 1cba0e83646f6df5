package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

var _ storage.Store = (*Store)(nil)

// RecordError stores one error event as it came: its embedded change is kept for people to see,
// but is not replayable (storage.NotReadBack). The projector reads the change back and calls
// RecordErrorChecked.
func (s *Store) RecordError(ctx context.Context, ev domain.ErrorEvent) error {
	return s.RecordErrorChecked(ctx, ev, storage.NotReadBack)
}

// RecordErrorChecked stores one error event whose Event, EventHeaders, EventID and EventVersion
// the caller read back from the changes stream; notReplayable, when not empty, says why they may
// not be sent again. A redelivered event (same id) changes nothing; a new occurrence of an active
// error of the same record and kind adds to it, and the newest change wins: an occurrence of an
// older version only counts, and so does one not read back against one that was (upsertError).
// An error of a version that has synced since (it reached the
// projector late) is stored as resolved. Text is made storable first (see clean), so that no
// event, however malformed, fails for its values.
func (s *Store) RecordErrorChecked(ctx context.Context, ev domain.ErrorEvent, notReplayable string) error {
	ev = storage.CleanEvent(ev)
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
		return rejected(fmt.Errorf("postgres: record occurrence %s: %w", ev.ID, err))
	}
	if tag.RowsAffected() == 0 {
		return tx.Commit(ctx) // seen before
	}

	status, resolvedAt, reason := storage.ErrorOpen, (*time.Time)(nil), (*string)(nil)
	if ev.EventVersion != nil {
		c, err := readCoupling(ctx, tx, ev.Table, ev.Key)
		if err != nil {
			return err
		}
		if c.Status == domain.CouplingSynced && c.Version >= *ev.EventVersion {
			now, why := time.Now().UTC(), storage.SyncedBeforeStored(c.Version)
			status, resolvedAt, reason = storage.ErrorResolved, &now, &why
		}
	}
	// Never JSON null: details are merged as objects, the call stack read as a list.
	if ev.Details == nil {
		ev.Details = map[string]string{}
	}
	if ev.CallStack == nil {
		ev.CallStack = []domain.Stage{}
	}
	details, _ := json.Marshal(ev.Details)
	stack, _ := json.Marshal(ev.CallStack)
	headers, _ := json.Marshal(ev.EventHeaders)
	var dvStatus *int
	var dvCode, dvMessage *string
	if dv := ev.Dataverse; dv != nil {
		dvCode, dvMessage = &dv.Code, &dv.Message
		if dv.Status >= 0 && dv.Status <= math.MaxInt32 { // an integer column; any other number is not an HTTP status
			dvStatus = &dv.Status
		}
	}
	var row *uuid.UUID
	if id, err := uuid.Parse(ev.RowID); err == nil {
		row = &id
	}
	var why *string
	if notReplayable != "" {
		r := storage.Clean(notReplayable, storage.TextMax)
		why = &r
	}
	args := []any{string(ev.Class), string(ev.Kind), ev.Table, ev.Key, ev.Message, ev.Resolution, details,
		dvStatus, dvCode, dvMessage, stack, ev.Stage, ev.Event, headers, ev.EventID, ev.EventVersion, ev.Entity, row,
		delivery, ev.OccurredAt, string(status), resolvedAt, reason, why}
	var id int64
	if status == storage.ErrorOpen {
		err = tx.QueryRow(ctx, insertError+upsertError, args...).Scan(&id)
	} else {
		err = tx.QueryRow(ctx, insertError+` RETURNING id`, args...).Scan(&id)
	}
	if err != nil {
		return rejected(fmt.Errorf("postgres: record error %s/%s %s: %w", ev.Table, ev.Key, ev.Kind, err))
	}
	if _, err := tx.Exec(ctx, `UPDATE sync_error_occurrences SET error_id = $1 WHERE message_id = $2`, id, ev.ID); err != nil {
		return rejected(fmt.Errorf("postgres: link occurrence %s: %w", ev.ID, err))
	}
	return tx.Commit(ctx)
}

const insertError = `INSERT INTO sync_errors (class, kind, table_name, source_key, message, resolution, details,
		dataverse_status, dataverse_code, dataverse_message, call_stack, stage, event, event_headers, event_id,
		event_version, entity, row_id, delivery, first_seen, last_seen, kept_seen, status, resolved_at, resolved_reason, not_replayable)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $20, $20, $21, $22, $23, $24)`

// upsertError adds an occurrence to the record's active error of the same kind. Every occurrence
// counts; only a newer one replaces what the error keeps: one of a newer version, or of the same
// version seen no earlier than the kept one (kept_seen: last_seen is raised by older versions'
// occurrences too). So an older version arriving late (published out of order, or redelivered)
// never displaces the newest, for a replay must send the newest change. And an occurrence whose
// change was not read back (not_replayable) never displaces one whose change was: anyone allowed
// on the error topics could have written it, with any version. A newer occurrence also reopens a
// replayed error (its replay failed again) and ends any replay claim. An occurrence of a skipped
// record (stage 'skipped') keeps the error's own description and brings only its change, which
// a retry sends.
var upsertError = func() string {
	const newer = `((EXCLUDED.not_replayable IS NULL OR sync_errors.not_replayable IS NOT NULL) AND
		(COALESCE(EXCLUDED.event_version, -1) > COALESCE(sync_errors.event_version, -1) OR
		(COALESCE(EXCLUDED.event_version, -1) = COALESCE(sync_errors.event_version, -1) AND EXCLUDED.kept_seen >= sync_errors.kept_seen)))`
	set := []string{
		"occurrences = sync_errors.occurrences + 1",
		"first_seen = LEAST(sync_errors.first_seen, EXCLUDED.first_seen)",
		"last_seen = GREATEST(sync_errors.last_seen, EXCLUDED.last_seen)",
		"status = CASE WHEN " + newer + " THEN 'open' ELSE sync_errors.status END",
		"replay_claimed_at = CASE WHEN " + newer + " THEN NULL ELSE sync_errors.replay_claimed_at END",
		"details = CASE WHEN NOT " + newer + " THEN sync_errors.details WHEN EXCLUDED.stage = 'skipped' THEN (CASE WHEN jsonb_typeof(sync_errors.details) = 'object' THEN sync_errors.details ELSE '{}'::jsonb END) || EXCLUDED.details ELSE EXCLUDED.details END",
	}
	for _, c := range []string{"class", "message", "resolution", "dataverse_status", "dataverse_code", "dataverse_message", "call_stack"} {
		set = append(set, c+" = CASE WHEN "+newer+" AND EXCLUDED.stage <> 'skipped' THEN EXCLUDED."+c+" ELSE sync_errors."+c+" END")
	}
	for _, c := range []string{"stage", "event", "event_headers", "event_id", "event_version", "entity", "row_id", "delivery", "kept_seen", "not_replayable"} {
		set = append(set, c+" = CASE WHEN "+newer+" THEN EXCLUDED."+c+" ELSE sync_errors."+c+" END")
	}
	return `
	ON CONFLICT (table_name, md5(source_key), kind) WHERE status IN ('open', 'replayed') DO UPDATE SET
		` + strings.Join(set, ",\n\t\t") + `
	RETURNING id`
}()

// IsDataError reports whether PostgreSQL refused the values themselves: SQLSTATE class 22 (data
// exception: bad encoding, a NUL, a value out of range) or 54 (program limit: an index entry too
// large). Sending the same values again fails again, so the caller must not wait for it.
func IsDataError(err error) bool {
	var pg *pgconn.PgError
	if !errors.As(err, &pg) || len(pg.Code) != 5 {
		return false
	}
	switch pg.Code[:2] {
	case "22", "54":
		return true
	}
	return false
}

// WaitingOn returns the replayable open errors of records that failed because the dependency
// table/key was not coupled, oldest first, at most limit of them.
func (s *Store) WaitingOn(ctx context.Context, table, key string, limit int) ([]int64, error) {
	table, key = storage.Clean(table, storage.TextMax), storage.Clean(key, storage.TextMax)
	rows, err := s.pool.Query(ctx, `SELECT id FROM sync_errors
		WHERE status = 'open' AND kind = 'dependency_not_coupled'
		  AND md5(details->>'dependency_table') = md5($1) AND md5(details->>'dependency_key') = md5($2)
		  AND details->>'dependency_table' = $1 AND details->>'dependency_key' = $2
		  AND event IS NOT NULL AND not_replayable IS NULL
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

// ResolveRecord resolves the open and replayed errors of a record up to the version it synced.
// The resolution is only a hint: the version is the least of the one it names and the one the
// couplings table holds (the workers write it in this database before they announce a sync), so
// that a forged or mistaken resolution cannot close an error of a change that has not synced. An
// error without a version is resolved when the record synced after it was last seen.
func (s *Store) ResolveRecord(ctx context.Context, synced domain.RecordSynced) error {
	table, key := storage.Clean(synced.Table, storage.NameMax), storage.Clean(synced.Key, storage.KeyMax)
	_, err := s.pool.Exec(ctx, `WITH c AS (
			SELECT LEAST($3::bigint, version) AS version, last_synced_at FROM couplings WHERE table_name = $1 AND source_key = $2)
		UPDATE sync_errors e SET status = 'resolved', resolved_at = now(),
			resolved_reason = 'the record synced version ' || c.version
		FROM c
		WHERE e.table_name = $1 AND md5(e.source_key) = md5($2) AND e.source_key = $2 AND e.status IN ('open', 'replayed')
		  AND (e.event_version <= c.version OR (e.event_version IS NULL AND e.last_seen <= c.last_synced_at))`,
		table, key, synced.Version)
	if err != nil {
		return fmt.Errorf("postgres: resolve %s/%s: %w", table, key, err)
	}
	return nil
}

const errorColumns = `id, class, kind, table_name, source_key, message, resolution, details,
	dataverse_status, dataverse_code, dataverse_message, call_stack, stage, event, event_id, event_version,
	entity, row_id, delivery, first_seen, last_seen, occurrences, status, resolved_at, resolved_reason, replays, not_replayable`

func scanError(row pgx.Row) (storage.StoredError, error) {
	var e storage.StoredError
	err := row.Scan(&e.ID, &e.Class, &e.Kind, &e.Table, &e.Key, &e.Message, &e.Resolution, &e.Details,
		&e.DataverseStatus, &e.DataverseCode, &e.DataverseMessage, &e.CallStack, &e.Stage, &e.Event, &e.EventID,
		&e.EventVersion, &e.Entity, &e.RowID, &e.Delivery, &e.FirstSeen, &e.LastSeen, &e.Occurrences, &e.Status,
		&e.ResolvedAt, &e.ResolvedReason, &e.Replays, &e.NotReplayable)
	return e, err
}

// PageErrors returns one page of errors, newest first.
func (s *Store) PageErrors(ctx context.Context, f storage.ErrorFilter) (storage.ErrorPage, error) {
	f.Limit = storage.PageLimit(f.Limit)
	var since, until, afterSeen *time.Time
	var afterID int64
	if !f.Since.IsZero() {
		since = &f.Since
	}
	if !f.Until.IsZero() {
		until = &f.Until
	}
	if f.Cursor != "" {
		t, i, err := storage.ParseCursor(f.Cursor)
		if err != nil {
			return storage.ErrorPage{}, err
		}
		afterSeen, afterID = &t, i
	}
	rows, err := s.pool.Query(ctx, `SELECT `+errorColumns+` FROM sync_errors
		WHERE ($1 = '' OR class = $1) AND ($2 = '' OR kind = $2) AND ($3 = '' OR status = $3)
		  AND ($4 = '' OR table_name = $4) AND ($5 = '' OR source_key = $5)
		  AND ($6 = '' OR strpos(lower(message), lower($6)) > 0 OR strpos(lower(source_key), lower($6)) > 0 OR strpos(lower(table_name), lower($6)) > 0)
		  AND ($7::timestamptz IS NULL OR last_seen >= $7) AND ($8::timestamptz IS NULL OR last_seen < $8)
		  AND ($9::timestamptz IS NULL OR (last_seen, id) < ($9, $10))
		ORDER BY last_seen DESC, id DESC LIMIT $11`,
		string(f.Class), string(f.Kind), string(f.Status), f.Table, f.Key, f.Text, since, until, afterSeen, afterID, f.Limit+1)
	if err != nil {
		return storage.ErrorPage{}, fmt.Errorf("postgres: list errors: %w", err)
	}
	defer rows.Close()
	page := storage.ErrorPage{Errors: []storage.StoredError{}}
	for rows.Next() {
		e, err := scanError(rows)
		if err != nil {
			return storage.ErrorPage{}, fmt.Errorf("postgres: read error row: %w", err)
		}
		page.Errors = append(page.Errors, e)
	}
	if err := rows.Err(); err != nil {
		return storage.ErrorPage{}, err
	}
	if len(page.Errors) > f.Limit {
		page.Errors = page.Errors[:f.Limit]
		last := page.Errors[f.Limit-1]
		page.Next = storage.Cursor(last)
	}
	return page, nil
}

// ListErrors returns the first page of errors, newest first.
func (s *Store) ListErrors(ctx context.Context, f storage.ErrorFilter) ([]storage.StoredError, error) {
	page, err := s.PageErrors(ctx, f)
	return page.Errors, err
}
