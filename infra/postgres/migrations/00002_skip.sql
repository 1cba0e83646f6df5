-- +goose Up
-- The skip rule: consecutive permanent failures of one kind, and when the record was last tried.
ALTER TABLE couplings ADD COLUMN failures integer NOT NULL DEFAULT 0;
ALTER TABLE couplings ADD COLUMN last_attempt_at timestamptz;

-- +goose Down
ALTER TABLE couplings DROP COLUMN last_attempt_at;
ALTER TABLE couplings DROP COLUMN failures;
