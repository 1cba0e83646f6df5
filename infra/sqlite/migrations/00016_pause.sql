-- +goose Up
-- Pause and resume per table: a row per table ever paused (see the PostgreSQL migration).
CREATE TABLE table_pauses (
    table_name     TEXT    PRIMARY KEY,
    paused         INTEGER NOT NULL,
    changed_at     INTEGER NOT NULL,
    changed_by     TEXT    NOT NULL,
    catching_up    INTEGER NOT NULL DEFAULT 0,
    resume_backlog INTEGER NOT NULL DEFAULT 0
);

-- +goose Down
DROP TABLE table_pauses;
