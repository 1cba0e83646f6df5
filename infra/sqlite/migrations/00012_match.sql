-- +goose Up
-- Match-based coupling asks which record a Dataverse row is coupled to (CouplingOfRow).
CREATE INDEX couplings_row ON couplings (entity, row_id) WHERE row_id IS NOT NULL;

-- +goose Down
DROP INDEX couplings_row;
