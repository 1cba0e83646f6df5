-- +goose Up
-- One row per source record: its Dataverse row and how far it was synced.
CREATE TABLE couplings (
    table_name      text        NOT NULL,
    source_key      text        NOT NULL,
    row_id          uuid,
    entity          text        NOT NULL DEFAULT '',
    version         bigint      NOT NULL DEFAULT -1,
    status          text        NOT NULL,
    last_synced_at  timestamptz,
    skipped         boolean     NOT NULL DEFAULT false,
    last_error_kind text        NOT NULL DEFAULT '',
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, source_key)
);

-- The errors ledger: one open row per record and kind, however often it recurs.
CREATE TABLE sync_errors (
    id                bigserial   PRIMARY KEY,
    class             text        NOT NULL,
    kind              text        NOT NULL,
    table_name        text        NOT NULL,
    source_key        text        NOT NULL,
    message           text        NOT NULL,
    resolution        text        NOT NULL,
    details           jsonb       NOT NULL DEFAULT '{}',
    dataverse_status  integer,
    dataverse_code    text,
    dataverse_message text,
    call_stack        jsonb       NOT NULL DEFAULT '[]',
    stage             text        NOT NULL DEFAULT '',
    event             bytea,
    event_headers     jsonb,
    event_id          text,
    event_version     bigint,
    entity            text,
    row_id            uuid,
    delivery          jsonb       NOT NULL DEFAULT '{}',
    first_seen        timestamptz NOT NULL,
    last_seen         timestamptz NOT NULL,
    occurrences       integer     NOT NULL DEFAULT 1,
    status            text        NOT NULL DEFAULT 'open',
    resolved_at       timestamptz,
    resolved_reason   text
);
CREATE UNIQUE INDEX sync_errors_open_record_kind ON sync_errors (table_name, source_key, kind) WHERE status = 'open';
CREATE INDEX sync_errors_last_seen ON sync_errors (last_seen DESC);

-- Every error event stored, by its message id: a redelivered event counts once.
CREATE TABLE sync_error_occurrences (
    message_id text        PRIMARY KEY,
    error_id   bigint      REFERENCES sync_errors (id) ON DELETE CASCADE,
    seen_at    timestamptz NOT NULL,
    delivery   jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX sync_error_occurrences_error ON sync_error_occurrences (error_id);

-- +goose Down
DROP TABLE sync_error_occurrences;
DROP TABLE sync_errors;
DROP TABLE couplings;
