-- +goose Up
-- A Dataverse row is coupled to at most one record, as in Business Central: a record claims the
-- row it is about to couple to (matched, created or adopted) together with the check that no
-- other record is coupled to it, and a unique index refuses a second live coupling of a row.

-- A worker of the previous version may still be committing couplings (a rolling upgrade): the
-- lock waits for its open commits and holds new ones until this migration commits, so that no
-- second coupling of a row lands between the repair below and the index, which would then fail.
-- Reads go on; the old workers' commits wait (seconds: the repair and index build are quick).
LOCK TABLE couplings IN SHARE ROW EXCLUSIVE MODE;

-- A record's claim on a Dataverse row while its sync (or a person's Couple) is under way. It lives
-- as long as the record's claim of the same token (record_claims), and is deleted with it when the
-- record's coupling is stored or its claim released; a row claim whose token no longer holds a
-- live record claim is dead and is taken over.
CREATE TABLE row_claims (
    entity     text NOT NULL,
    row_id     uuid NOT NULL,
    token      uuid NOT NULL,
    table_name text NOT NULL,
    source_key text NOT NULL,
    PRIMARY KEY (entity, row_id)
);
CREATE INDEX row_claims_token ON row_claims (token);

-- Before the index: rows coupled to several records keep the record that synced last; the others
-- are uncoupled, with an open already_coupled error each and an audit entry.
CREATE TEMP TABLE m17_losers AS
SELECT table_name, source_key, entity, row_id, row_name, kt AS kept_table, kk AS kept_key
FROM (
    SELECT table_name, source_key, entity, row_id, row_name,
        row_number() OVER (PARTITION BY entity, row_id ORDER BY last_synced_at DESC NULLS LAST, updated_at DESC, table_name, source_key) AS n,
        first_value(table_name) OVER (PARTITION BY entity, row_id ORDER BY last_synced_at DESC NULLS LAST, updated_at DESC, table_name, source_key) AS kt,
        first_value(source_key) OVER (PARTITION BY entity, row_id ORDER BY last_synced_at DESC NULLS LAST, updated_at DESC, table_name, source_key) AS kk
    FROM couplings WHERE row_id IS NOT NULL AND status IN ('synced', 'failed')
) c
WHERE n > 1;

INSERT INTO sync_errors (class, kind, table_name, source_key, message, resolution, details, stage, entity, row_id,
    first_seen, last_seen, kept_seen, status, not_replayable)
SELECT 'coupling', 'already_coupled', l.table_name, l.source_key,
    format('Cannot couple %s/%s to this %s record, because the %s record is already coupled to %s/%s (%s). Migration 00017 uncoupled %s/%s: a Dataverse row is coupled to one record only, and %s/%s synced it last.',
        l.table_name, l.source_key, l.entity, l.entity, l.kept_table, l.kept_key,
        CASE WHEN l.row_name = '' THEN format('%s %s', l.entity, l.row_id) ELSE format('%s "%s" (%s)', l.entity, l.row_name, l.row_id) END,
        l.table_name, l.source_key, l.kept_table, l.kept_key),
    format('Uncouple %s/%s if the row is %s/%s''s and couple %s/%s to it by hand, or couple %s/%s to its own row; or let its next change match or create one.',
        l.kept_table, l.kept_key, l.table_name, l.source_key, l.table_name, l.source_key, l.table_name, l.source_key),
    jsonb_build_object('entity', l.entity, 'row_id', l.row_id::text, 'row_name', l.row_name, 'coupled_table', l.kept_table, 'coupled_key', l.kept_key),
    'migration 00017', l.entity, l.row_id, now(), now(), now(), 'open', 'the error keeps no change to send'
FROM m17_losers l
WHERE NOT EXISTS (SELECT 1 FROM sync_errors e WHERE e.table_name = l.table_name AND e.source_key = l.source_key
    AND e.kind = 'already_coupled' AND e.status IN ('open', 'replayed'));

INSERT INTO audit_log (actor, action, target, affected)
SELECT 'migration 00017', 'uncouple', format('%s/%s from %s %s: the row is coupled to %s/%s, which synced it last',
    table_name, source_key, entity, row_id, kept_table, kept_key), 1
FROM m17_losers;

UPDATE couplings c SET row_id = NULL, row_version = '', row_name = '', status = 'failed', skipped = false,
    last_error_kind = 'already_coupled', failures = 1, updated_at = now()
FROM m17_losers l WHERE c.table_name = l.table_name AND c.source_key = l.source_key;

DROP TABLE m17_losers;

CREATE UNIQUE INDEX couplings_row_live ON couplings (entity, row_id) WHERE row_id IS NOT NULL AND status IN ('synced', 'failed');

-- +goose Down
DROP INDEX couplings_row_live;
DROP TABLE row_claims;
