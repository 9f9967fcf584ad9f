-- How many of a call's pairs and gaps are not queued yet, kept by PostgreSQL itself, so the
-- transcript-pairs job finds calls cut short through a small partial index instead of reading
-- every transcript's insights each minute.
ALTER TABLE voice_transcripts ADD COLUMN drafts_pending integer GENERATED ALWAYS AS (
    jsonb_array_length(coalesce(learning_insights -> 'pairs', '[]'::jsonb))
    + jsonb_array_length(coalesce(learning_insights -> 'unanswered', '[]'::jsonb))
    - jsonb_array_length(coalesce(learning_insights -> 'queued', '[]'::jsonb))) STORED;
CREATE INDEX idx_transcripts_drafts_pending ON voice_transcripts (created_at)
    WHERE drafts_pending > 0;
