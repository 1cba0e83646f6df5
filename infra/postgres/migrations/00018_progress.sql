-- +goose Up
-- Long work's progress (issue 11 item 5). A backlog period is a table's first load or catch-up:
-- opened and counted by the workers, read alike by every serve replica. At most one is open per
-- table; ended ones stay for a while as history.
CREATE TABLE backlog_periods (
    id         bigserial   PRIMARY KEY,
    table_name text        NOT NULL,
    kind       text        NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    total      bigint      NOT NULL,
    done       bigint      NOT NULL DEFAULT 0,
    left_now   bigint      NOT NULL,
    start_seq  bigint      NOT NULL,
    ended_at   timestamptz
);
CREATE UNIQUE INDEX backlog_periods_open ON backlog_periods (table_name) WHERE ended_at IS NULL;

-- The lease on counting the backlog (one row): one worker reads JetStream for every table, the
-- others report. backlog_reports are each worker's changes in hand per table (a JSON object of
-- counts), stamped: a period ends only when the fresh reports add up to nothing in hand.
CREATE TABLE backlog_counter (
    id         integer     PRIMARY KEY CHECK (id = 1),
    holder     text        NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE TABLE backlog_reports (
    worker      text        PRIMARY KEY,
    in_hand     jsonb       NOT NULL,
    reported_at timestamptz NOT NULL DEFAULT now()
);

-- A coupling run of a table: one unfinished per table (a stale one is marked interrupted before
-- another starts); its heartbeat says it is alive.
CREATE TABLE coupling_runs (
    id           bigserial   PRIMARY KEY,
    table_name   text        NOT NULL,
    started_by   text        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    failure      text        NOT NULL DEFAULT '',
    total        integer,
    done         integer     NOT NULL DEFAULT 0,
    coupled      integer     NOT NULL DEFAULT 0,
    created      integer     NOT NULL DEFAULT 0,
    failed       integer     NOT NULL DEFAULT 0,
    skipped      integer     NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX coupling_runs_unfinished ON coupling_runs (table_name) WHERE finished_at IS NULL;
CREATE INDEX coupling_runs_table ON coupling_runs (table_name, id DESC);

-- A resume's catch-up is a backlog period now, but table_pauses keeps catching_up and
-- resume_backlog (expand/contract): the previous release's workers and serve replicas read them
-- while an upgrade rolls, so pause and resume still write them as it did. A later release drops them.

-- +goose Down
DROP TABLE backlog_reports;
DROP TABLE backlog_counter;
DROP TABLE coupling_runs;
DROP TABLE backlog_periods;
