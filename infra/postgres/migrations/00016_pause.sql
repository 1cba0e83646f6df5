-- +goose Up
-- Pause and resume per table: a row per table ever paused. Workers read them every few seconds;
-- resume_backlog is the table's waiting changes when it was resumed, for the catch-up's progress.
CREATE TABLE table_pauses (
    table_name     text        PRIMARY KEY,
    paused         boolean     NOT NULL,
    changed_at     timestamptz NOT NULL DEFAULT now(),
    changed_by     text        NOT NULL,
    catching_up    boolean     NOT NULL DEFAULT false,
    resume_backlog bigint      NOT NULL DEFAULT 0
);

-- +goose Down
DROP TABLE table_pauses;
