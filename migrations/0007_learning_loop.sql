-- What the learning loop adds: per-entry helpfulness, the shop's dedup thresholds, and the
-- signals that were merged into a queue item.
CREATE TABLE entry_stats (
    entry_id    uuid PRIMARY KEY,
    shop_id     integer NOT NULL REFERENCES shops (id) ON DELETE CASCADE,
    helpful     integer NOT NULL DEFAULT 0,
    unhelpful   integer NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_entry_stats_shop ON entry_stats (shop_id);

ALTER TABLE shops
    ADD COLUMN dedup_question_similarity real NOT NULL DEFAULT 0.88
        CHECK (dedup_question_similarity BETWEEN 0 AND 1),
    ADD COLUMN dedup_answer_ratio smallint NOT NULL DEFAULT 90
        CHECK (dedup_answer_ratio BETWEEN 0 AND 100);

ALTER TABLE learning_queue
    ADD COLUMN signals jsonb NOT NULL DEFAULT '[]'::jsonb;
CREATE INDEX idx_learning_open ON learning_queue (shop_id, kind)
    WHERE status IN ('pending', 'approved');
CREATE INDEX idx_learning_rejected ON learning_queue (shop_id) WHERE status = 'rejected';
