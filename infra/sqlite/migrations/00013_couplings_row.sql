-- +goose Up
-- CouplingOfRow's lookup: a person couples a record to a row only while no other record has it.
CREATE INDEX IF NOT EXISTS couplings_row_id ON couplings (row_id) WHERE row_id IS NOT NULL;

-- +goose Down
DROP INDEX IF EXISTS couplings_row_id;
