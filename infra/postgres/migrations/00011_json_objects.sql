-- +goose Up
-- An error stored without details kept JSON null, which a later skipped occurrence merged into an
-- array: such a row broke every list that read it. Details are objects and call stacks lists from
-- now on (RecordErrorChecked); the rows stored before are repaired, a merged array keeping its
-- last object.
UPDATE sync_errors SET details = CASE
        WHEN jsonb_typeof(details) = 'array' AND jsonb_typeof(details->-1) = 'object' THEN details->-1
        ELSE '{}'::jsonb END
    WHERE jsonb_typeof(details) <> 'object';
UPDATE sync_errors SET call_stack = '[]'::jsonb WHERE jsonb_typeof(call_stack) <> 'array';

-- +goose Down
SELECT 1;
