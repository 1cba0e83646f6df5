-- +goose Up
-- The Dataverse row's version (ETag) after dvsync's last write: the next write is conditioned on
-- it, so that a write dvsync gave up on can never land over a newer one.
ALTER TABLE couplings ADD COLUMN row_version text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE couplings DROP COLUMN row_version;
