-- +goose Up
-- Page sessions signed out before they expired. A session is a signed cookie; this table is how
-- every serve replica sharing the database learns that one was ended, until it would have
-- expired anyway (rows past expires_at are pruned).
CREATE TABLE page_sessions_ended (
    id         text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX page_sessions_ended_expires ON page_sessions_ended (expires_at);

-- +goose Down
DROP TABLE page_sessions_ended;
