-- +goose Up
-- A worker's claim on a record while it syncs it: no other worker syncs the record until the claim
-- is released (with the coupling it wrote, in one statement) or its lease runs out. A claim is a
-- row, not a lock held by a transaction: no connection or transaction stays open across the
-- Dataverse call, and a worker that meets another's claim tries again later instead of waiting.
CREATE TABLE record_claims (
    table_name text        NOT NULL,
    source_key text        NOT NULL,
    token      uuid        NOT NULL,
    until      timestamptz NOT NULL,
    PRIMARY KEY (table_name, source_key)
);
CREATE INDEX record_claims_token ON record_claims (token);

-- +goose Down
DROP TABLE record_claims;
