-- +goose Up
-- When the occurrence whose change the error keeps was seen. Two occurrences of one version are
-- ordered by it, not by last_seen, which a late occurrence of an older version also raises: a
-- replay that failed again must reopen the error although an older change was counted after it.
-- Rows stored before this migration get their last_seen, the closest there is.
ALTER TABLE sync_errors ADD COLUMN kept_seen timestamptz;
UPDATE sync_errors SET kept_seen = last_seen;
ALTER TABLE sync_errors ALTER COLUMN kept_seen SET NOT NULL;

-- +goose Down
ALTER TABLE sync_errors DROP COLUMN kept_seen;
