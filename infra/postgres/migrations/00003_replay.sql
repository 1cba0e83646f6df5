-- +goose Up
-- A replayed error stays the record's active error: failing again adds an occurrence to it.
DROP INDEX sync_errors_open_record_kind;
CREATE UNIQUE INDEX sync_errors_active_record_kind ON sync_errors (table_name, source_key, kind)
    WHERE status IN ('open', 'replayed');
ALTER TABLE sync_errors ADD COLUMN replays integer NOT NULL DEFAULT 0;

-- Every replay of an error: who asked, when, and the message it published.
CREATE TABLE sync_error_replays (
    error_id     bigint      NOT NULL REFERENCES sync_errors (id) ON DELETE CASCADE,
    attempt      integer     NOT NULL,
    message_id   text        NOT NULL,
    requested_by text        NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    outcome      text        NOT NULL,
    PRIMARY KEY (error_id, attempt)
);

-- Who replayed or deleted what, and how many.
CREATE TABLE audit_log (
    id       bigserial   PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text        NOT NULL,
    action   text        NOT NULL,
    target   text        NOT NULL,
    affected integer     NOT NULL
);

-- +goose Down
DROP TABLE audit_log;
DROP TABLE sync_error_replays;
ALTER TABLE sync_errors DROP COLUMN replays;
DROP INDEX sync_errors_active_record_kind;
CREATE UNIQUE INDEX sync_errors_open_record_kind ON sync_errors (table_name, source_key, kind) WHERE status = 'open';
