package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// RecordError stores one error event as it came; its embedded change is not replayable
// (storage.NotReadBack).
func (s *Store) RecordError(ctx context.Context, ev domain.ErrorEvent) error {
	return s.RecordErrorChecked(ctx, ev, storage.NotReadBack)
}

// RecordErrorChecked stores one error event (storage.Store), by the rules of infra/postgres's
// RecordErrorChecked and its upsertError, which the suite holds both to.
func (s *Store) RecordErrorChecked(ctx context.Context, ev domain.ErrorEvent, notReplayable string) error {
	ev = storage.CleanEvent(ev)
	return s.inTx(ctx, func(tx *sql.Tx) error {
		delivery := jsonText(ev.Delivery)
		seen := unixNano(ev.OccurredAt)
		res, err := tx.ExecContext(ctx, `INSERT INTO sync_error_occurrences (message_id, seen_at, delivery) VALUES (?, ?, ?)
			ON CONFLICT (message_id) DO NOTHING`, ev.ID, seen, delivery)
		if err != nil {
			return fmt.Errorf("sqlite: record occurrence %s: %w", ev.ID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil // seen before
		}
		status, resolvedAt, reason := storage.ErrorOpen, any(nil), any(nil)
		if ev.EventVersion != nil {
			c, err := readCoupling(ctx, tx, ev.Table, ev.Key)
			if err != nil {
				return err
			}
			if c.Status == domain.CouplingSynced && c.Version >= *ev.EventVersion {
				status, resolvedAt, reason = storage.ErrorResolved, s.now().UnixNano(), storage.SyncedBeforeStored(c.Version)
			}
		}
		var dvStatus, dvCode, dvMessage any
		if dv := ev.Dataverse; dv != nil {
			dvCode, dvMessage = dv.Code, dv.Message
			if dv.Status >= 0 && dv.Status <= math.MaxInt32 {
				dvStatus = dv.Status
			}
		}
		var row any
		if id, err := uuid.Parse(ev.RowID); err == nil {
			row = id.String()
		}
		var why any
		if notReplayable != "" {
			why = storage.Clean(notReplayable, storage.TextMax)
		}
		var headers any
		if ev.EventHeaders != nil {
			headers = jsonText(ev.EventHeaders)
		}
		var version any
		if ev.EventVersion != nil {
			version = *ev.EventVersion
		}
		details := ev.Details
		if details == nil {
			details = map[string]string{}
		}
		stack := ev.CallStack
		if stack == nil {
			stack = []domain.Stage{}
		}
		args := []any{string(ev.Class), string(ev.Kind), ev.Table, ev.Key, ev.Message, ev.Resolution, jsonText(details),
			dvStatus, dvCode, dvMessage, jsonText(stack), ev.Stage, ev.Event, headers, ev.EventID, version,
			ev.Entity, row, delivery, seen, string(status), resolvedAt, reason, why}
		q := insertError + ` RETURNING id`
		if status == storage.ErrorOpen {
			q = insertError + upsertError
		}
		var id int64
		if err := tx.QueryRowContext(ctx, q, args...).Scan(&id); err != nil {
			return fmt.Errorf("sqlite: record error %s/%s %s: %w", ev.Table, ev.Key, ev.Kind, err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE sync_error_occurrences SET error_id = ? WHERE message_id = ?`, id, ev.ID); err != nil {
			return fmt.Errorf("sqlite: link occurrence %s: %w", ev.ID, err)
		}
		return nil
	})
}

const insertError = `INSERT INTO sync_errors (class, kind, table_name, source_key, message, resolution, details,
		dataverse_status, dataverse_code, dataverse_message, call_stack, stage, event, event_headers, event_id,
		event_version, entity, row_id, delivery, first_seen, last_seen, kept_seen, status, resolved_at, resolved_reason, not_replayable)
	VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?20, ?20, ?21, ?22, ?23, ?24)`

// upsertError is infra/postgres's upsertError in SQLite's words: every occurrence counts; only a
// newer one (a newer version, or the same version seen no earlier than the kept one; never an
// unverified one over a verified one) replaces what the error keeps and reopens it.
var upsertError = func() string {
	const newer = `((excluded.not_replayable IS NULL OR sync_errors.not_replayable IS NOT NULL) AND
		(COALESCE(excluded.event_version, -1) > COALESCE(sync_errors.event_version, -1) OR
		(COALESCE(excluded.event_version, -1) = COALESCE(sync_errors.event_version, -1) AND excluded.kept_seen >= sync_errors.kept_seen)))`
	set := []string{
		"occurrences = sync_errors.occurrences + 1",
		"first_seen = min(sync_errors.first_seen, excluded.first_seen)",
		"last_seen = max(sync_errors.last_seen, excluded.last_seen)",
		"status = CASE WHEN " + newer + " THEN 'open' ELSE sync_errors.status END",
		"replay_claimed_at = CASE WHEN " + newer + " THEN NULL ELSE sync_errors.replay_claimed_at END",
		"details = CASE WHEN NOT " + newer + " THEN sync_errors.details WHEN excluded.stage = 'skipped' THEN json_patch(sync_errors.details, excluded.details) ELSE excluded.details END",
	}
	for _, c := range []string{"class", "message", "resolution", "dataverse_status", "dataverse_code", "dataverse_message", "call_stack"} {
		set = append(set, c+" = CASE WHEN "+newer+" AND excluded.stage <> 'skipped' THEN excluded."+c+" ELSE sync_errors."+c+" END")
	}
	for _, c := range []string{"stage", "event", "event_headers", "event_id", "event_version", "entity", "row_id", "delivery", "kept_seen", "not_replayable"} {
		set = append(set, c+" = CASE WHEN "+newer+" THEN excluded."+c+" ELSE sync_errors."+c+" END")
	}
	return `
	ON CONFLICT (table_name, source_key, kind) WHERE status IN ('open', 'replayed') DO UPDATE SET
		` + strings.Join(set, ",\n\t\t") + `
	RETURNING id`
}()

// WaitingOn returns the replayable open errors of records waiting for the dependency table/key.
func (s *Store) WaitingOn(ctx context.Context, table, key string, limit int) ([]int64, error) {
	table, key = storage.Clean(table, storage.TextMax), storage.Clean(key, storage.TextMax)
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM sync_errors
		WHERE status = 'open' AND kind = 'dependency_not_coupled'
		  AND json_extract(details, '$.dependency_table') = ? AND json_extract(details, '$.dependency_key') = ?
		  AND event IS NOT NULL AND not_replayable IS NULL
		ORDER BY first_seen, id LIMIT ?`, table, key, limit)
	if err != nil {
		return nil, fmt.Errorf("errors waiting on %s %s: %w", table, key, err)
	}
	defer rows.Close()
	ids := []int64{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("errors waiting on %s %s: %w", table, key, err)
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// ResolveRecord resolves the open and replayed errors of a record up to the least of the version
// it names and the one its coupling holds (a resolution is only a hint).
func (s *Store) ResolveRecord(ctx context.Context, synced domain.RecordSynced) error {
	table, key := storage.Clean(synced.Table, storage.NameMax), storage.Clean(synced.Key, storage.KeyMax)
	_, err := s.db.ExecContext(ctx, `UPDATE sync_errors SET status = 'resolved', resolved_at = ?1,
			resolved_reason = 'the record synced version ' || c.version
		FROM (SELECT min(?4, version) AS version, last_synced_at FROM couplings WHERE table_name = ?2 AND source_key = ?3) AS c
		WHERE sync_errors.table_name = ?2 AND sync_errors.source_key = ?3 AND sync_errors.status IN ('open', 'replayed')
		  AND (sync_errors.event_version <= c.version OR (sync_errors.event_version IS NULL AND sync_errors.last_seen <= c.last_synced_at))`,
		s.now().UnixNano(), table, key, synced.Version)
	if err != nil {
		return fmt.Errorf("sqlite: resolve %s/%s: %w", table, key, err)
	}
	return nil
}

const errorColumns = `id, class, kind, table_name, source_key, message, resolution, details,
	dataverse_status, dataverse_code, dataverse_message, call_stack, stage, event, event_id, event_version,
	entity, row_id, delivery, first_seen, last_seen, occurrences, status, resolved_at, resolved_reason, replays, not_replayable`

func scanError(row scanner) (storage.StoredError, error) {
	var (
		e                                                 storage.StoredError
		details, stack, delivery                          string
		dvStatus, version, resolvedAt                     sql.NullInt64
		firstSeen, lastSeen                               int64
		dvCode, dvMessage, eventID, entity, rowID, reason sql.NullString
		notReplayable                                     sql.NullString
	)
	err := row.Scan(&e.ID, &e.Class, &e.Kind, &e.Table, &e.Key, &e.Message, &e.Resolution, &details,
		&dvStatus, &dvCode, &dvMessage, &stack, &e.Stage, &e.Event, &eventID, &version,
		&entity, &rowID, &delivery, &firstSeen, &lastSeen, &e.Occurrences, &e.Status, &resolvedAt, &reason, &e.Replays, &notReplayable)
	if err != nil {
		return e, err
	}
	if err := errors.Join(json.Unmarshal([]byte(details), &e.Details), json.Unmarshal([]byte(stack), &e.CallStack),
		json.Unmarshal([]byte(delivery), &e.Delivery)); err != nil {
		return e, fmt.Errorf("sqlite: error %d: %w", e.ID, err)
	}
	if dvStatus.Valid {
		v := int(dvStatus.Int64)
		e.DataverseStatus = &v
	}
	if version.Valid {
		e.EventVersion = &version.Int64
	}
	if id, err := uuid.Parse(rowID.String); rowID.Valid && err == nil {
		e.RowID = &id
	}
	e.DataverseCode, e.DataverseMessage, e.EventID, e.Entity = optionalString(dvCode), optionalString(dvMessage), optionalString(eventID), optionalString(entity)
	e.ResolvedReason, e.NotReplayable, e.ResolvedAt = optionalString(reason), optionalString(notReplayable), optionalTime(resolvedAt)
	e.FirstSeen, e.LastSeen = time.Unix(0, firstSeen).UTC(), time.Unix(0, lastSeen).UTC()
	return e, nil
}

// PageErrors returns one page of errors, newest first.
func (s *Store) PageErrors(ctx context.Context, f storage.ErrorFilter) (storage.ErrorPage, error) {
	f.Limit = storage.PageLimit(f.Limit)
	var afterSeen, afterID any
	if f.Cursor != "" {
		t, id, err := storage.ParseCursor(f.Cursor)
		if err != nil {
			return storage.ErrorPage{}, err
		}
		afterSeen, afterID = boundNanos(t), id
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+errorColumns+` FROM sync_errors
		WHERE (?1 = '' OR class = ?1) AND (?2 = '' OR kind = ?2) AND (?3 = '' OR status = ?3)
		  AND (?4 = '' OR table_name = ?4) AND (?5 = '' OR source_key = ?5)
		  AND (?6 = '' OR instr(dvsync_fold(message), dvsync_fold(?6)) > 0 OR instr(dvsync_fold(source_key), dvsync_fold(?6)) > 0 OR instr(dvsync_fold(table_name), dvsync_fold(?6)) > 0)
		  AND (?7 IS NULL OR last_seen >= ?7) AND (?8 IS NULL OR last_seen < ?8)
		  AND (?9 IS NULL OR last_seen < ?9 OR (last_seen = ?9 AND id < ?10))
		ORDER BY last_seen DESC, id DESC LIMIT ?11`,
		string(f.Class), string(f.Kind), string(f.Status), f.Table, f.Key, f.Text, boundNanos(f.Since), boundNanos(f.Until), afterSeen, afterID, f.Limit+1)
	if err != nil {
		return storage.ErrorPage{}, fmt.Errorf("sqlite: list errors: %w", err)
	}
	defer rows.Close()
	page := storage.ErrorPage{Errors: []storage.StoredError{}}
	for rows.Next() {
		e, err := scanError(rows)
		if err != nil {
			return storage.ErrorPage{}, fmt.Errorf("sqlite: read error row: %w", err)
		}
		page.Errors = append(page.Errors, e)
	}
	if err := rows.Err(); err != nil {
		return storage.ErrorPage{}, err
	}
	if len(page.Errors) > f.Limit {
		page.Errors = page.Errors[:f.Limit]
		page.Next = storage.Cursor(page.Errors[f.Limit-1])
	}
	return page, nil
}

// ListErrors returns the first page of errors, newest first.
func (s *Store) ListErrors(ctx context.Context, f storage.ErrorFilter) ([]storage.StoredError, error) {
	page, err := s.PageErrors(ctx, f)
	return page.Errors, err
}

// GetError returns one error with its occurrences and replays.
func (s *Store) GetError(ctx context.Context, id int64) (storage.ErrorDetail, error) {
	e, err := scanError(s.db.QueryRowContext(ctx, `SELECT `+errorColumns+` FROM sync_errors WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return storage.ErrorDetail{}, storage.ErrNotFound
	}
	if err != nil {
		return storage.ErrorDetail{}, fmt.Errorf("sqlite: read error %d: %w", id, err)
	}
	d := storage.ErrorDetail{StoredError: e, History: []storage.Occurrence{}, ReplayLog: []storage.Replay{}}
	var headers string
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(event_headers, '{}') FROM sync_errors WHERE id = ?`, id).Scan(&headers); err != nil {
		return d, fmt.Errorf("sqlite: read error %d headers: %w", id, err)
	}
	if err := json.Unmarshal([]byte(headers), &d.EventHeaders); err != nil {
		return d, fmt.Errorf("sqlite: read error %d headers: %w", id, err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT message_id, seen_at, delivery FROM sync_error_occurrences WHERE error_id = ? ORDER BY seen_at`, id)
	if err != nil {
		return d, fmt.Errorf("sqlite: read occurrences: %w", err)
	}
	for rows.Next() {
		var o storage.Occurrence
		var seen int64
		var delivery string
		if err := rows.Scan(&o.MessageID, &seen, &delivery); err != nil {
			rows.Close()
			return d, err
		}
		o.SeenAt = time.Unix(0, seen).UTC()
		_ = json.Unmarshal([]byte(delivery), &o.Delivery)
		d.History = append(d.History, o)
	}
	rows.Close()
	rows, err = s.db.QueryContext(ctx, `SELECT attempt, message_id, requested_by, requested_at, outcome FROM sync_error_replays WHERE error_id = ? ORDER BY attempt`, id)
	if err != nil {
		return d, fmt.Errorf("sqlite: read replays: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r storage.Replay
		var at int64
		if err := rows.Scan(&r.Attempt, &r.MessageID, &r.RequestedBy, &at, &r.Outcome); err != nil {
			return d, err
		}
		r.RequestedAt = time.Unix(0, at).UTC()
		d.ReplayLog = append(d.ReplayLog, r)
	}
	return d, rows.Err()
}

// DeleteErrors deletes errors last seen before cutoff (all when cutoff is zero), audited.
func (s *Store) DeleteErrors(ctx context.Context, cutoff time.Time, actor string) (int64, error) {
	target := "all errors"
	if !cutoff.IsZero() {
		target = "errors last seen before " + cutoff.UTC().Format(time.RFC3339)
	}
	var n int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM sync_errors WHERE ?1 IS NULL OR last_seen < ?1`, boundNanos(cutoff))
		if err != nil {
			return fmt.Errorf("sqlite: delete errors: %w", err)
		}
		n, _ = res.RowsAffected()
		return s.audit(ctx, tx, actor, "delete", target, n)
	})
	return n, err
}

// DeleteError deletes one error, audited; its coupling stays.
func (s *Store) DeleteError(ctx context.Context, id int64, actor string) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		var table, key string
		err := tx.QueryRowContext(ctx, `DELETE FROM sync_errors WHERE id = ? RETURNING table_name, source_key`, id).Scan(&table, &key)
		if errors.Is(err, sql.ErrNoRows) {
			return storage.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("sqlite: delete error %d: %w", id, err)
		}
		return s.audit(ctx, tx, actor, "delete", fmt.Sprintf("error %d (%s/%s)", id, table, key), 1)
	})
}

func (s *Store) audit(ctx context.Context, tx *sql.Tx, actor, action, target string, affected int64) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit_log (at, actor, action, target, affected) VALUES (?, ?, ?, ?, ?)`,
		s.now().UnixNano(), actor, action, target, affected); err != nil {
		return fmt.Errorf("sqlite: audit: %w", err)
	}
	return nil
}

// ClaimReplay makes the caller the one replay of attempt replays+1 of an error, in one statement.
func (s *Store) ClaimReplay(ctx context.Context, id int64) (storage.ReplayClaim, error) {
	c := storage.ReplayClaim{ErrorID: id}
	now := s.now()
	var claimed int64
	var headers string
	var version sql.NullInt64
	err := s.db.QueryRowContext(ctx, `UPDATE sync_errors SET replays = replays + 1, replay_claimed_at = ?2
		WHERE id = ?1 AND status <> 'resolved' AND length(event) > 0 AND not_replayable IS NULL AND kind <> 'invalid_event'
		  AND (replay_claimed_at IS NULL OR replay_claimed_at < ?3)
		RETURNING replays, replay_claimed_at, table_name, source_key, event, COALESCE(event_headers, '{}'), event_version,
			COALESCE(json_extract(delivery, '$.subject'), '')`, id, now.UnixNano(), now.Add(-storage.ReplayGrace).UnixNano()).
		Scan(&c.Attempt, &claimed, &c.Table, &c.Key, &c.Event, &headers, &version, &c.Subject)
	if err == nil {
		c.ClaimedAt = time.Unix(0, claimed).UTC()
		if version.Valid {
			c.EventVersion = &version.Int64
		}
		if err := json.Unmarshal([]byte(headers), &c.EventHeaders); err != nil {
			return c, fmt.Errorf("sqlite: claim replay of %d: %w", id, err)
		}
		return c, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return c, fmt.Errorf("sqlite: claim replay of %d: %w", id, err)
	}
	var (
		status        storage.ErrorStatus
		kind          string
		hasEvent      bool
		notReplayable sql.NullString
	)
	err = s.db.QueryRowContext(ctx, `SELECT status, kind, COALESCE(length(event) > 0, 0), not_replayable FROM sync_errors WHERE id = ?`, id).
		Scan(&status, &kind, &hasEvent, &notReplayable)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return c, storage.ErrNotFound
	case err != nil:
		return c, fmt.Errorf("sqlite: read error %d: %w", id, err)
	case status == storage.ErrorResolved:
		return c, &storage.NotReplayableError{Reason: storage.ReasonResolved}
	case kind == string(domain.KindInvalidEvent):
		return c, &storage.NotReplayableError{Reason: storage.ReasonInvalid}
	case notReplayable.Valid:
		return c, &storage.NotReplayableError{Reason: notReplayable.String}
	case !hasEvent:
		return c, &storage.NotReplayableError{Reason: storage.ReasonNoChange}
	}
	return c, storage.ErrAlreadyReplaying
}

// ReleaseReplay gives up a claim whose change was not published.
func (s *Store) ReleaseReplay(ctx context.Context, c storage.ReplayClaim) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE sync_errors SET replay_claimed_at = NULL WHERE id = ? AND replay_claimed_at = ?`,
		c.ErrorID, c.ClaimedAt.UnixNano()); err != nil {
		return fmt.Errorf("sqlite: release replay of %d: %w", c.ErrorID, err)
	}
	return nil
}

// FinishReplay records a replay's outcome while its claim holds (see infra/postgres).
func (s *Store) FinishReplay(ctx context.Context, c storage.ReplayClaim, messageID, actor, outcome string) error {
	now := s.now().UnixNano()
	return s.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		switch outcome {
		case "published":
			_, err = tx.ExecContext(ctx, `UPDATE sync_errors SET status = 'replayed' WHERE id = ? AND status = 'open' AND replay_claimed_at = ?`,
				c.ErrorID, c.ClaimedAt.UnixNano())
		case "stale":
			_, err = tx.ExecContext(ctx, `UPDATE sync_errors SET status = 'resolved', resolved_at = ?, replay_claimed_at = NULL,
				resolved_reason = ? WHERE id = ? AND replay_claimed_at = ?`, now, storage.ReasonStaleReplay, c.ErrorID, c.ClaimedAt.UnixNano())
		}
		if err != nil {
			return fmt.Errorf("sqlite: finish replay of %d: %w", c.ErrorID, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO sync_error_replays (error_id, attempt, message_id, requested_by, requested_at, outcome)
			VALUES (?, ?, ?, ?, ?, ?)`, c.ErrorID, c.Attempt, messageID, actor, now, outcome); err != nil {
			return fmt.Errorf("sqlite: record replay of %d: %w", c.ErrorID, err)
		}
		return s.audit(ctx, tx, actor, "replay", fmt.Sprintf("error %d (%s/%s) attempt %d: %s", c.ErrorID, c.Table, c.Key, c.Attempt, outcome), 1)
	})
}

// Audit returns the newest audit entries.
func (s *Store) Audit(ctx context.Context, limit int) ([]storage.AuditEntry, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, at, actor, action, target, affected FROM audit_log ORDER BY id DESC LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: read audit log: %w", err)
	}
	defer rows.Close()
	out := []storage.AuditEntry{}
	for rows.Next() {
		var a storage.AuditEntry
		var at int64
		if err := rows.Scan(&a.ID, &at, &a.Actor, &a.Action, &a.Target, &a.Affected); err != nil {
			return nil, err
		}
		a.At = time.Unix(0, at).UTC()
		out = append(out, a)
	}
	return out, rows.Err()
}

// Status sums up every table that has couplings or errors.
func (s *Store) Status(ctx context.Context) ([]storage.TableStatus, error) {
	byTable := map[string]*storage.TableStatus{}
	get := func(table string) *storage.TableStatus {
		t := byTable[table]
		if t == nil {
			t = &storage.TableStatus{Table: table, OpenErrors: map[string]int{"coupling": 0, "setup": 0}}
			byTable[table] = t
		}
		return t
	}
	rows, err := s.db.QueryContext(ctx, `SELECT table_name, SUM(status = 'synced'), SUM(status = 'failed'), SUM(skipped), max(last_synced_at)
		FROM couplings GROUP BY table_name`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: status: %w", err)
	}
	for rows.Next() {
		var table string
		var synced, failed, skipped int
		var last sql.NullInt64
		if err := rows.Scan(&table, &synced, &failed, &skipped, &last); err != nil {
			rows.Close()
			return nil, err
		}
		t := get(table)
		t.Synced, t.Failed, t.Skipped, t.LastSyncedAt = synced, failed, skipped, optionalTime(last)
	}
	rows.Close()
	rows, err = s.db.QueryContext(ctx, `SELECT table_name, SUM(class = 'coupling'), SUM(class = 'setup')
		FROM sync_errors WHERE status IN ('open', 'replayed') GROUP BY table_name`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: status: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var table string
		var coupling, setup int
		if err := rows.Scan(&table, &coupling, &setup); err != nil {
			return nil, err
		}
		t := get(table)
		t.OpenErrors["coupling"], t.OpenErrors["setup"] = coupling, setup
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]storage.TableStatus, 0, len(byTable))
	for _, t := range byTable {
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Table < out[j].Table })
	return out, nil
}

// ListCouplings lists couplings, the most recently changed first.
func (s *Store) ListCouplings(ctx context.Context, f storage.CouplingFilter) ([]domain.Coupling, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT table_name, source_key, `+couplingColumns+` FROM couplings
		WHERE (?1 = '' OR table_name = ?1) AND (?2 = '' OR status = ?2) AND (NOT ?3 OR skipped)
		  AND (?4 = '' OR instr(dvsync_fold(source_key), dvsync_fold(?4)) > 0)
		ORDER BY updated_at DESC LIMIT ?5`, f.Table, string(f.Status), f.Skipped, f.Text, storage.CouplingLimit(f.Limit))
	if err != nil {
		return nil, fmt.Errorf("sqlite: list couplings: %w", err)
	}
	defer rows.Close()
	out := []domain.Coupling{}
	for rows.Next() {
		var c domain.Coupling
		if err := scanCoupling(rows, &c, &c.Table, &c.Key); err != nil {
			return nil, fmt.Errorf("sqlite: read coupling row: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// CountLedger counts the open errors by class and kind with the first sighting of the oldest, and
// the skipped records by table (storage.Store); partial indexes hold exactly the rows counted.
func (s *Store) CountLedger(ctx context.Context) (storage.LedgerCounts, error) {
	out := storage.LedgerCounts{Skipped: map[string]int{}}
	rows, err := s.db.QueryContext(ctx, `SELECT class, kind, count(*), min(first_seen) FROM sync_errors
		WHERE status IN ('open', 'replayed') GROUP BY class, kind`)
	if err != nil {
		return out, fmt.Errorf("sqlite: count open errors: %w", err)
	}
	for rows.Next() {
		var o storage.OpenErrors
		var oldest int64
		if err := rows.Scan(&o.Class, &o.Kind, &o.Count, &oldest); err != nil {
			rows.Close()
			return out, fmt.Errorf("sqlite: count open errors: %w", err)
		}
		o.Oldest = time.Unix(0, oldest).UTC()
		out.Open = append(out.Open, o)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("sqlite: count open errors: %w", err)
	}
	rows, err = s.db.QueryContext(ctx, `SELECT table_name, count(*) FROM couplings WHERE skipped GROUP BY table_name`)
	if err != nil {
		return out, fmt.Errorf("sqlite: count skipped records: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var table string
		var n int
		if err := rows.Scan(&table, &n); err != nil {
			return out, fmt.Errorf("sqlite: count skipped records: %w", err)
		}
		out.Skipped[table] = n
	}
	return out, rows.Err()
}
