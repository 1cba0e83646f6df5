-- +goose Up
-- The schema of infra/postgres/migrations as it stands after its 00010, in SQLite's terms: times
-- are Unix nanoseconds (UTC), ids and UUIDs text, JSON documents text.

-- One row per source record: its Dataverse row and how far it was synced.
CREATE TABLE couplings (
    table_name      TEXT    NOT NULL,
    source_key      TEXT    NOT NULL,
    row_id          TEXT,
    entity          TEXT    NOT NULL DEFAULT '',
    version         INTEGER NOT NULL DEFAULT -1,
    status          TEXT    NOT NULL,
    last_synced_at  INTEGER,
    skipped         INTEGER NOT NULL DEFAULT 0,
    last_error_kind TEXT    NOT NULL DEFAULT '',
    failures        INTEGER NOT NULL DEFAULT 0,
    last_attempt_at INTEGER,
    row_version     TEXT    NOT NULL DEFAULT '',
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (table_name, source_key)
);
CREATE INDEX couplings_updated ON couplings (updated_at DESC);
CREATE INDEX couplings_skipped ON couplings (table_name) WHERE skipped;

-- The errors ledger: one active row per record and kind, however often it recurs.
CREATE TABLE sync_errors (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    class             TEXT    NOT NULL,
    kind              TEXT    NOT NULL,
    table_name        TEXT    NOT NULL,
    source_key        TEXT    NOT NULL,
    message           TEXT    NOT NULL,
    resolution        TEXT    NOT NULL,
    details           TEXT    NOT NULL DEFAULT '{}',
    dataverse_status  INTEGER,
    dataverse_code    TEXT,
    dataverse_message TEXT,
    call_stack        TEXT    NOT NULL DEFAULT '[]',
    stage             TEXT    NOT NULL DEFAULT '',
    event             BLOB,
    event_headers     TEXT,
    event_id          TEXT,
    event_version     INTEGER,
    entity            TEXT,
    row_id            TEXT,
    delivery          TEXT    NOT NULL DEFAULT '{}',
    first_seen        INTEGER NOT NULL,
    last_seen         INTEGER NOT NULL,
    kept_seen         INTEGER NOT NULL,
    occurrences       INTEGER NOT NULL DEFAULT 1,
    status            TEXT    NOT NULL DEFAULT 'open',
    resolved_at       INTEGER,
    resolved_reason   TEXT,
    replays           INTEGER NOT NULL DEFAULT 0,
    replay_claimed_at INTEGER,
    not_replayable    TEXT
);
CREATE UNIQUE INDEX sync_errors_active_record_kind ON sync_errors (table_name, source_key, kind)
    WHERE status IN ('open', 'replayed');
CREATE INDEX sync_errors_last_seen ON sync_errors (last_seen DESC, id DESC);
CREATE INDEX sync_errors_open_class_kind ON sync_errors (class, kind, first_seen) WHERE status IN ('open', 'replayed');
CREATE INDEX sync_errors_waiting_on ON sync_errors (json_extract(details, '$.dependency_table'), json_extract(details, '$.dependency_key'))
    WHERE status = 'open' AND kind = 'dependency_not_coupled';

-- Every error event stored, by its message id: a redelivered event counts once.
CREATE TABLE sync_error_occurrences (
    message_id TEXT    PRIMARY KEY,
    error_id   INTEGER REFERENCES sync_errors (id) ON DELETE CASCADE,
    seen_at    INTEGER NOT NULL,
    delivery   TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX sync_error_occurrences_error ON sync_error_occurrences (error_id);

-- Every replay of an error: who asked, when, and the message it published.
CREATE TABLE sync_error_replays (
    error_id     INTEGER NOT NULL REFERENCES sync_errors (id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,
    message_id   TEXT    NOT NULL,
    requested_by TEXT    NOT NULL,
    requested_at INTEGER NOT NULL,
    outcome      TEXT    NOT NULL,
    PRIMARY KEY (error_id, attempt)
);

-- Who replayed or deleted what, and how many.
CREATE TABLE audit_log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    actor    TEXT    NOT NULL,
    action   TEXT    NOT NULL,
    target   TEXT    NOT NULL,
    affected INTEGER NOT NULL
);

-- Page sessions signed out before they expired.
CREATE TABLE page_sessions_ended (
    id         TEXT    PRIMARY KEY,
    expires_at INTEGER NOT NULL
);

-- A worker's claim on a record while it syncs it (see infra/postgres's 00009).
CREATE TABLE record_claims (
    table_name TEXT    NOT NULL,
    source_key TEXT    NOT NULL,
    token      TEXT    NOT NULL,
    until      INTEGER NOT NULL,
    PRIMARY KEY (table_name, source_key)
);
CREATE INDEX record_claims_token ON record_claims (token);

-- +goose Down
DROP TABLE record_claims;
DROP TABLE page_sessions_ended;
DROP TABLE audit_log;
DROP TABLE sync_error_replays;
DROP TABLE sync_error_occurrences;
DROP TABLE sync_errors;
DROP TABLE couplings;
