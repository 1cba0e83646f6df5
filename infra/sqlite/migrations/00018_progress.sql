-- +goose Up
-- Long work's progress: backlog periods and coupling runs (see the PostgreSQL migration). Times
-- are Unix nanoseconds of the store's clock.
CREATE TABLE backlog_periods (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    table_name TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    started_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    total      INTEGER NOT NULL,
    done       INTEGER NOT NULL DEFAULT 0,
    left_now   INTEGER NOT NULL,
    start_seq  INTEGER NOT NULL,
    ended_at   INTEGER
);
CREATE UNIQUE INDEX backlog_periods_open ON backlog_periods (table_name) WHERE ended_at IS NULL;

-- The lease on counting the backlog, and each worker's changes in hand (see the PostgreSQL migration).
CREATE TABLE backlog_counter (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE backlog_reports (
    worker      TEXT    PRIMARY KEY,
    in_hand     TEXT    NOT NULL,
    reported_at INTEGER NOT NULL
);

CREATE TABLE coupling_runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    table_name   TEXT    NOT NULL,
    started_by   TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    finished_at  INTEGER,
    failure      TEXT    NOT NULL DEFAULT '',
    total        INTEGER,
    done         INTEGER NOT NULL DEFAULT 0,
    coupled      INTEGER NOT NULL DEFAULT 0,
    created      INTEGER NOT NULL DEFAULT 0,
    failed       INTEGER NOT NULL DEFAULT 0,
    skipped      INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX coupling_runs_unfinished ON coupling_runs (table_name) WHERE finished_at IS NULL;
CREATE INDEX coupling_runs_table ON coupling_runs (table_name, id DESC);

-- table_pauses keeps catching_up and resume_backlog for the previous release (see the PostgreSQL
-- migration); a later release drops them.

-- +goose Down
DROP TABLE backlog_reports;
DROP TABLE backlog_counter;
DROP TABLE coupling_runs;
DROP TABLE backlog_periods;
