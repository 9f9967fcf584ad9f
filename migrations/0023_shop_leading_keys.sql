-- Keys that lead with the shop, so that every tenant table can be distributed by shop_id
-- (Citus): a distributed table's primary and unique keys must contain its distribution column,
-- and a foreign key between two distributed tables must include it on both sides. A key that
-- leads with shop_id is also what a query for one shop's row looks up, and a foreign key that
-- includes shop_id cannot point from one shop's row to another's. Global tables (shops,
-- api_keys, web_sessions, embedding_models, job_runs, schema_migrations, and admin_audit_log
-- below) keep their keys: they are small, belong to no shop or are looked up before the shop
-- is known (a key by its prefix, a session by its token), and would be reference tables,
-- which distributed tables may point at.
--
-- One transaction, under ACCESS EXCLUSIVE locks: every primary key is rebuilt and every new
-- foreign key checks its rows. A row that pointed into another shop fails the migration, and
-- should: no code writes such a row, so it would be a bug to look at, not data to keep.

-- 1. Events of no shop leave the shop's audit trail: an admin key signing in to the review
-- pages was recorded with shop_id NULL, which a column a table is distributed by cannot hold.
-- Those rows move to a global trail of their own; nothing read them from here (every reader
-- of learning_audit_log asks for one shop's rows).
CREATE TABLE admin_audit_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor        text NOT NULL,
    actor_key_id uuid,
    action       varchar(50) NOT NULL,
    subject_type varchar(30) NOT NULL,
    subject_id   uuid,
    before       jsonb,
    after        jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);
INSERT INTO admin_audit_log (actor, actor_key_id, action, subject_type, subject_id, before,
                             after, created_at)
SELECT actor, actor_key_id, action, subject_type, subject_id, before, after, created_at
FROM learning_audit_log WHERE shop_id IS NULL
ORDER BY id;
DELETE FROM learning_audit_log WHERE shop_id IS NULL;
ALTER TABLE learning_audit_log ALTER COLUMN shop_id SET NOT NULL;

-- 2. Foreign keys between tenant tables go first: each depends on the primary key it points at.
ALTER TABLE conversation_feedback DROP CONSTRAINT conversation_feedback_conversation_id_fkey;
ALTER TABLE response_analytics DROP CONSTRAINT response_analytics_conversation_id_fkey;
ALTER TABLE owner_corrections DROP CONSTRAINT owner_corrections_conversation_id_fkey;
ALTER TABLE voice_transcripts DROP CONSTRAINT voice_transcripts_conversation_id_fkey;
ALTER TABLE knowledge_base_rag
    DROP CONSTRAINT knowledge_base_rag_document_id_fkey,
    DROP CONSTRAINT knowledge_base_rag_supersedes_fkey,
    DROP CONSTRAINT knowledge_base_rag_superseded_by_fkey;
ALTER TABLE knowledge_vectors DROP CONSTRAINT knowledge_vectors_knowledge_id_fkey;
ALTER TABLE learning_queue
    DROP CONSTRAINT learning_queue_applied_knowledge_id_fkey,
    DROP CONSTRAINT learning_queue_merged_into_fkey;
ALTER TABLE out_of_scope_examples DROP CONSTRAINT out_of_scope_examples_queue_item_id_fkey;

-- 3. Primary keys (shop_id, id). A row is found by its shop and id: every query in knowledge/
-- that picks rows by id names their shop too (which is also what routes a distributed query
-- to the one shard holding the shop), except an admin's look-up of a queue item named by id
-- alone, which PostgreSQL 18 answers with a skip scan of this key.
ALTER TABLE documents DROP CONSTRAINT documents_pkey, ADD PRIMARY KEY (shop_id, id);
ALTER TABLE knowledge_base_rag DROP CONSTRAINT knowledge_base_rag_pkey,
    ADD PRIMARY KEY (shop_id, id);
ALTER TABLE knowledge_vectors DROP CONSTRAINT knowledge_vectors_pkey,
    ADD PRIMARY KEY (shop_id, id);
ALTER TABLE conversation_memory DROP CONSTRAINT conversation_memory_pkey,
    ADD PRIMARY KEY (shop_id, id);
ALTER TABLE response_analytics DROP CONSTRAINT response_analytics_pkey,
    ADD PRIMARY KEY (shop_id, id);
ALTER TABLE conversation_feedback DROP CONSTRAINT conversation_feedback_pkey,
    ADD PRIMARY KEY (shop_id, id);
ALTER TABLE owner_corrections DROP CONSTRAINT owner_corrections_pkey,
    ADD PRIMARY KEY (shop_id, id);
ALTER TABLE voice_transcripts DROP CONSTRAINT voice_transcripts_pkey,
    ADD PRIMARY KEY (shop_id, id);
ALTER TABLE learning_queue DROP CONSTRAINT learning_queue_pkey, ADD PRIMARY KEY (shop_id, id);
ALTER TABLE learning_audit_log DROP CONSTRAINT learning_audit_log_pkey,
    ADD PRIMARY KEY (shop_id, id);
ALTER TABLE out_of_scope_examples DROP CONSTRAINT out_of_scope_examples_pkey,
    ADD PRIMARY KEY (shop_id, id);
ALTER TABLE entry_stats DROP CONSTRAINT entry_stats_pkey, ADD PRIMARY KEY (shop_id, entry_id);
-- The examples' (shop_id, id) index is now their primary key, and entry_stats' (shop_id) index
-- a prefix of its key. The (shop_id) indexes of the vectors and the queue stay: the exact
-- search scans a shop's vectors through idx_kv_shop, and it is smaller than the key.
DROP INDEX idx_oos_shop;
DROP INDEX idx_entry_stats_shop;

-- 4. The one live version of an entry, within its shop.
DROP INDEX idx_kb_live_entry;
CREATE UNIQUE INDEX idx_kb_live_entry ON knowledge_base_rag (shop_id, entry_id)
    WHERE valid_to IS NULL;

-- 5. The foreign keys again, each including shop_id, with the same ON DELETE as before. Where
-- a reference is set to NULL, only that column is: shop_id belongs to the row itself.
ALTER TABLE conversation_feedback ADD CONSTRAINT conversation_feedback_conversation_id_fkey
    FOREIGN KEY (shop_id, conversation_id) REFERENCES conversation_memory (shop_id, id)
    ON DELETE CASCADE;
ALTER TABLE response_analytics ADD CONSTRAINT response_analytics_conversation_id_fkey
    FOREIGN KEY (shop_id, conversation_id) REFERENCES conversation_memory (shop_id, id)
    ON DELETE CASCADE;
ALTER TABLE owner_corrections ADD CONSTRAINT owner_corrections_conversation_id_fkey
    FOREIGN KEY (shop_id, conversation_id) REFERENCES conversation_memory (shop_id, id)
    ON DELETE SET NULL (conversation_id);
ALTER TABLE voice_transcripts ADD CONSTRAINT voice_transcripts_conversation_id_fkey
    FOREIGN KEY (shop_id, conversation_id) REFERENCES conversation_memory (shop_id, id)
    ON DELETE SET NULL (conversation_id);
ALTER TABLE knowledge_base_rag
    ADD CONSTRAINT knowledge_base_rag_document_id_fkey
        FOREIGN KEY (shop_id, document_id) REFERENCES documents (shop_id, id)
        ON DELETE SET NULL (document_id),
    ADD CONSTRAINT knowledge_base_rag_supersedes_fkey
        FOREIGN KEY (shop_id, supersedes) REFERENCES knowledge_base_rag (shop_id, id),
    ADD CONSTRAINT knowledge_base_rag_superseded_by_fkey
        FOREIGN KEY (shop_id, superseded_by) REFERENCES knowledge_base_rag (shop_id, id);
ALTER TABLE knowledge_vectors ADD CONSTRAINT knowledge_vectors_knowledge_id_fkey
    FOREIGN KEY (shop_id, knowledge_id) REFERENCES knowledge_base_rag (shop_id, id)
    ON DELETE CASCADE;
ALTER TABLE learning_queue
    ADD CONSTRAINT learning_queue_applied_knowledge_id_fkey
        FOREIGN KEY (shop_id, applied_knowledge_id) REFERENCES knowledge_base_rag (shop_id, id),
    ADD CONSTRAINT learning_queue_merged_into_fkey
        FOREIGN KEY (shop_id, merged_into) REFERENCES learning_queue (shop_id, id);
ALTER TABLE out_of_scope_examples ADD CONSTRAINT out_of_scope_examples_queue_item_id_fkey
    FOREIGN KEY (shop_id, queue_item_id) REFERENCES learning_queue (shop_id, id)
    ON DELETE SET NULL (queue_item_id);

-- 6. The daily views: the queue's unique index leads with the shop like the others', and the
-- answers' view joins a turn to its analytics within their shop (a distributed join must be
-- on the distribution column). Rebuilt with the same columns, so readers see no change.
DROP INDEX idx_daily_learning_metrics;
CREATE UNIQUE INDEX idx_daily_learning_metrics
    ON daily_learning_metrics (shop_id, date, source_type, status);
DROP MATERIALIZED VIEW daily_answer_metrics;
CREATE MATERIALIZED VIEW daily_answer_metrics AS
SELECT m.shop_id,
       (m.created_at AT TIME ZONE 'UTC')::date                                AS date,
       coalesce(a.ab_test_variant, '')                                      AS variant,
       count(*)                                                             AS answers,
       count(*) FILTER (WHERE m.tier IN ('fallback', 'decline'))            AS fallbacks,
       count(*) FILTER (WHERE m.tier = 'decline')                           AS declines,
       count(*) FILTER (WHERE m.tier = 'handover')                          AS handovers,
       avg(m.confidence)                                                    AS mean_confidence,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY a.response_time_ms)      AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY a.response_time_ms)     AS p95_ms
FROM conversation_memory AS m
JOIN response_analytics AS a ON a.shop_id = m.shop_id AND a.conversation_id = m.id
GROUP BY 1, 2, 3;
CREATE UNIQUE INDEX idx_daily_answer_metrics ON daily_answer_metrics (shop_id, date, variant);
