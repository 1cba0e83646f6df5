-- +goose Up
-- Finds the open errors of records waiting for a dependency, when that dependency is coupled.
CREATE INDEX sync_errors_waiting_on ON sync_errors ((details->>'dependency_table'), (details->>'dependency_key'))
    WHERE status = 'open' AND kind = 'dependency_not_coupled';

-- +goose Down
DROP INDEX sync_errors_waiting_on;
