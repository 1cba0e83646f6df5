-- +goose Up
-- A replay claims its error in the same statement that checks nobody else has: the claim is
-- this timestamp, cleared when a newer occurrence reopens the error.
ALTER TABLE sync_errors ADD COLUMN replay_claimed_at timestamptz;
-- Why the kept change may not be replayed (it could not be read back from the changes stream);
-- NULL when it may. Rows stored before this migration keep being replayable.
ALTER TABLE sync_errors ADD COLUMN not_replayable text;

-- Keys of any length are indexed by their hash: a btree entry holds at most about 2.7 kB, and a
-- longer key must not make an error unstorable. Queries compare the hash and then the key.
DROP INDEX sync_errors_active_record_kind;
CREATE UNIQUE INDEX sync_errors_active_record_kind ON sync_errors (table_name, md5(source_key), kind)
    WHERE status IN ('open', 'replayed');
DROP INDEX sync_errors_waiting_on;
CREATE INDEX sync_errors_waiting_on ON sync_errors (md5(details->>'dependency_table'), md5(details->>'dependency_key'))
    WHERE status = 'open' AND kind = 'dependency_not_coupled';

-- +goose Down
DROP INDEX sync_errors_waiting_on;
CREATE INDEX sync_errors_waiting_on ON sync_errors ((details->>'dependency_table'), (details->>'dependency_key'))
    WHERE status = 'open' AND kind = 'dependency_not_coupled';
DROP INDEX sync_errors_active_record_kind;
CREATE UNIQUE INDEX sync_errors_active_record_kind ON sync_errors (table_name, source_key, kind)
    WHERE status IN ('open', 'replayed');
ALTER TABLE sync_errors DROP COLUMN not_replayable;
ALTER TABLE sync_errors DROP COLUMN replay_claimed_at;
