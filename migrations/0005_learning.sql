-- The learning loop's tables: signals, the queue they feed, and the audit trail.
CREATE TABLE conversation_feedback (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    shop_id          integer NOT NULL REFERENCES shops (id) ON DELETE CASCADE,
    conversation_id  uuid NOT NULL REFERENCES conversation_memory (id) ON DELETE CASCADE,
    feedback_type    varchar(20) NOT NULL
                     CHECK (feedback_type IN ('thumbs_up', 'thumbs_down', 'star_rating', 'emoji')),
    rating           integer CHECK (rating BETWEEN 1 AND 5),
    reason           text,
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_feedback_conversation ON conversation_feedback (conversation_id);
CREATE INDEX idx_feedback_type ON conversation_feedback (feedback_type);
CREATE INDEX idx_feedback_created_at ON conversation_feedback (created_at);
CREATE INDEX idx_feedback_type_created ON conversation_feedback (feedback_type, created_at);
CREATE INDEX idx_feedback_shop_created ON conversation_feedback (shop_id, created_at);

CREATE TABLE owner_corrections (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    shop_id             integer NOT NULL REFERENCES shops (id) ON DELETE CASCADE,
    conversation_id     uuid REFERENCES conversation_memory (id) ON DELETE SET NULL,
    question            text,
    original_response   text,
    corrected_answer    text NOT NULL,
    priority            varchar(20) NOT NULL DEFAULT 'normal'
                        CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    correction_context  text,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_by          uuid REFERENCES api_keys (id) ON DELETE SET NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    applied_at          timestamptz
);
CREATE INDEX idx_corrections_conversation ON owner_corrections (conversation_id);
CREATE INDEX idx_corrections_priority ON owner_corrections (priority);
CREATE INDEX idx_corrections_applied_at ON owner_corrections (applied_at);
CREATE INDEX idx_corrections_priority_created ON owner_corrections (priority, created_at);
CREATE INDEX idx_corrections_pending ON owner_corrections (shop_id, created_at)
    WHERE applied_at IS NULL;

CREATE TABLE voice_transcripts (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    shop_id            integer NOT NULL REFERENCES shops (id) ON DELETE CASCADE,
    conversation_id    uuid REFERENCES conversation_memory (id) ON DELETE SET NULL,
    transcript         text NOT NULL,
    processed_summary  text,
    embedding          vector(384),
    sentiment          varchar(20) CHECK (sentiment IN ('positive', 'neutral', 'negative', 'mixed')),
    entities           jsonb NOT NULL DEFAULT '{}'::jsonb,
    learning_insights  jsonb NOT NULL DEFAULT '{}'::jsonb,
    metadata           jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_transcripts_conversation ON voice_transcripts (conversation_id);
CREATE INDEX idx_transcripts_sentiment ON voice_transcripts (sentiment);
CREATE INDEX idx_transcripts_created_at ON voice_transcripts (created_at);
CREATE INDEX idx_transcripts_shop_created ON voice_transcripts (shop_id, created_at);
CREATE INDEX idx_transcripts_embedding_hnsw ON voice_transcripts
    USING hnsw (embedding vector_cosine_ops);
CREATE INDEX idx_transcripts_entities ON voice_transcripts USING gin (entities);
CREATE INDEX idx_transcripts_negative ON voice_transcripts (conversation_id, created_at)
    WHERE sentiment = 'negative';

CREATE TABLE learning_queue (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    shop_id              integer NOT NULL REFERENCES shops (id) ON DELETE CASCADE,
    status               varchar(20) NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'approved', 'rejected', 'applied', 'merged')),
    source_type          varchar(20) NOT NULL
                         CHECK (source_type IN ('feedback', 'correction', 'transcript', 'manual',
                                                'gap', 'handover')),
    source_id            uuid,
    kind                 varchar(20) NOT NULL DEFAULT 'answer'
                         CHECK (kind IN ('answer', 'gap', 'improve')),
    question             text,
    proposed_content     text,
    category             text,
    embedding            vector(384),
    confidence_score     integer NOT NULL DEFAULT 50 CHECK (confidence_score BETWEEN 0 AND 100),
    priority             varchar(20) NOT NULL DEFAULT 'normal'
                         CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    observations         integer NOT NULL DEFAULT 1 CHECK (observations >= 1),
    conflict_entry_id    uuid,
    nearest_entry_id     uuid,
    nearest_similarity   real,
    merged_into          uuid REFERENCES learning_queue (id),
    target_entry_id      uuid,
    applied_knowledge_id uuid REFERENCES knowledge_base_rag (id),
    review_note          text,
    metadata             jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at           timestamptz NOT NULL DEFAULT now(),
    reviewed_at          timestamptz,
    applied_at           timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    reviewed_by          uuid REFERENCES api_keys (id) ON DELETE SET NULL
);
CREATE INDEX idx_learning_status ON learning_queue (status);
CREATE INDEX idx_learning_shop ON learning_queue (shop_id);
CREATE INDEX idx_learning_source_type ON learning_queue (source_type);
CREATE INDEX idx_learning_created_at ON learning_queue (created_at);
CREATE INDEX idx_learning_status_created ON learning_queue (status, created_at);
CREATE INDEX idx_learning_confidence ON learning_queue (confidence_score);
-- Deduplication compares a shop's open items exactly; this index serves similarity across the
-- whole queue (analytics), so it is built lean: it is maintained on every new item.
CREATE INDEX idx_learning_embedding_hnsw ON learning_queue USING hnsw (embedding vector_cosine_ops)
    WITH (m = 8, ef_construction = 32);
CREATE INDEX idx_learning_pending ON learning_queue (shop_id, created_at) WHERE status = 'pending';
CREATE INDEX idx_learning_approved ON learning_queue (created_at) WHERE status = 'approved';
CREATE TRIGGER trg_learning_queue_updated_at BEFORE UPDATE ON learning_queue
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Who changed what in the queue or the knowledge base, before and after. Append-only.
CREATE TABLE learning_audit_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    shop_id      integer REFERENCES shops (id) ON DELETE CASCADE,
    actor        text NOT NULL,
    actor_key_id uuid,
    action       varchar(50) NOT NULL,
    subject_type varchar(30) NOT NULL,
    subject_id   uuid,
    before       jsonb,
    after        jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_audit_shop_created ON learning_audit_log (shop_id, created_at);
CREATE INDEX idx_audit_subject ON learning_audit_log (subject_id);
