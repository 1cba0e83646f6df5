-- +goose Up
-- A Dataverse row is coupled to at most one record (see infra/postgres's 00017): row claims, the
-- repair of rows coupled to several records, and a unique index on a row's live couplings.
CREATE TABLE row_claims (
    entity     TEXT NOT NULL,
    row_id     TEXT NOT NULL,
    token      TEXT NOT NULL,
    table_name TEXT NOT NULL,
    source_key TEXT NOT NULL,
    PRIMARY KEY (entity, row_id)
);
CREATE INDEX row_claims_token ON row_claims (token);

-- Rows coupled to several records keep the record that synced last; the others are uncoupled,
-- with an open already_coupled error each and an audit entry.
CREATE TEMP TABLE m17_losers AS
SELECT table_name, source_key, entity, row_id, row_name, kt AS kept_table, kk AS kept_key
FROM (
    SELECT table_name, source_key, entity, row_id, row_name,
        row_number() OVER w AS n, first_value(table_name) OVER w AS kt, first_value(source_key) OVER w AS kk
    FROM couplings WHERE row_id IS NOT NULL AND status IN ('synced', 'failed')
    WINDOW w AS (PARTITION BY entity, row_id ORDER BY last_synced_at IS NULL, last_synced_at DESC, updated_at DESC, table_name, source_key)
)
WHERE n > 1;

INSERT INTO sync_errors (class, kind, table_name, source_key, message, resolution, details, stage, entity, row_id,
    first_seen, last_seen, kept_seen, status, not_replayable)
SELECT 'coupling', 'already_coupled', table_name, source_key,
    'Cannot couple ' || table_name || '/' || source_key || ' to this ' || entity || ' record, because the ' || entity ||
        ' record is already coupled to ' || kept_table || '/' || kept_key || ' (' ||
        CASE WHEN row_name = '' THEN entity || ' ' || row_id ELSE entity || ' "' || row_name || '" (' || row_id || ')' END ||
        '). Migration 00017 uncoupled ' || table_name || '/' || source_key ||
        ': a Dataverse row is coupled to one record only, and ' || kept_table || '/' || kept_key || ' synced it last.',
    'Uncouple ' || kept_table || '/' || kept_key || ' if the row is ' || table_name || '/' || source_key || '''s and couple ' ||
        table_name || '/' || source_key || ' to it by hand, or couple ' || table_name || '/' || source_key ||
        ' to its own row; or let its next change match or create one.',
    json_object('entity', entity, 'row_id', row_id, 'row_name', row_name, 'coupled_table', kept_table, 'coupled_key', kept_key),
    'migration 00017', entity, row_id,
    CAST(strftime('%s', 'now') AS INTEGER) * 1000000000, CAST(strftime('%s', 'now') AS INTEGER) * 1000000000,
    CAST(strftime('%s', 'now') AS INTEGER) * 1000000000, 'open', 'the error keeps no change to send'
FROM m17_losers l
WHERE NOT EXISTS (SELECT 1 FROM sync_errors e WHERE e.table_name = l.table_name AND e.source_key = l.source_key
    AND e.kind = 'already_coupled' AND e.status IN ('open', 'replayed'));

INSERT INTO audit_log (at, actor, action, target, affected)
SELECT CAST(strftime('%s', 'now') AS INTEGER) * 1000000000, 'migration 00017', 'uncouple',
    table_name || '/' || source_key || ' from ' || entity || ' ' || row_id || ': the row is coupled to ' ||
        kept_table || '/' || kept_key || ', which synced it last', 1
FROM m17_losers;

UPDATE couplings SET row_id = NULL, row_version = '', row_name = '', status = 'failed', skipped = 0,
    last_error_kind = 'already_coupled', failures = 1, updated_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000000000
WHERE (table_name, source_key) IN (SELECT table_name, source_key FROM m17_losers);

DROP TABLE m17_losers;

CREATE UNIQUE INDEX couplings_row_live ON couplings (entity, row_id) WHERE row_id IS NOT NULL AND status IN ('synced', 'failed');

-- +goose Down
DROP INDEX couplings_row_live;
DROP TABLE row_claims;
