-- +goose Up
-- A person couples a record to a Dataverse row only while no other record is coupled to it
-- (CouplingOfRow): that lookup reads this index.
CREATE INDEX IF NOT EXISTS couplings_row_id ON couplings (row_id) WHERE row_id IS NOT NULL;

-- +goose Down
DROP INDEX IF EXISTS couplings_row_id;
