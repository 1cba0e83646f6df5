-- +goose Up
-- The metrics count the open errors by class and kind, with the oldest's first sighting, and the
-- skipped records by table, every few seconds (postgres.Store.CountLedger). Partial indexes keep
-- both counts to the rows counted, however many resolved errors and synced couplings there are.
CREATE INDEX sync_errors_open_class_kind ON sync_errors (class, kind, first_seen) WHERE status IN ('open', 'replayed');
CREATE INDEX couplings_skipped ON couplings (table_name) WHERE skipped;

-- +goose Down
DROP INDEX couplings_skipped;
DROP INDEX sync_errors_open_class_kind;
