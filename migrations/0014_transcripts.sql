-- Voice transcripts as an intake: the bot's conversation id (a string, not a turn), who called,
-- the format it came in, and whether a person should look at the call (a negative one).
ALTER TABLE voice_transcripts
    ADD COLUMN conversation_key varchar(200),
    ADD COLUMN user_id varchar(200),
    ADD COLUMN format varchar(10) NOT NULL DEFAULT 'text'
        CHECK (format IN ('text', 'json', 'vtt', 'srt')),
    ADD COLUMN needs_review boolean NOT NULL DEFAULT false,
    ADD COLUMN reviewed_at timestamptz,
    ADD COLUMN reviewed_by uuid REFERENCES api_keys (id) ON DELETE SET NULL,
    -- A call sent twice (a retried request, an import run again) is stored and learnt once.
    ADD COLUMN content_sha256 text;
CREATE UNIQUE INDEX idx_transcripts_content ON voice_transcripts (shop_id, content_sha256)
    WHERE content_sha256 IS NOT NULL;
CREATE INDEX idx_transcripts_review ON voice_transcripts (shop_id, created_at)
    WHERE needs_review AND reviewed_at IS NULL;
CREATE INDEX idx_transcripts_user ON voice_transcripts (shop_id, user_id);
