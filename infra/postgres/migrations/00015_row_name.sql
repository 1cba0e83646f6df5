-- +goose Up
-- The coupled row's primary name, as dvsync last sent it or found it by match: messages and the
-- page name the row by it. '' when unknown (couplings stored before it, rows sent without one).
ALTER TABLE couplings ADD COLUMN row_name text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE couplings DROP COLUMN row_name;
