-- The metrics summary over a period reads only a few narrow columns of wide rows (turns carry
-- their question vector, queue items their signals): covering indexes let it read the index
-- alone (measured by benchmarks/pages.py: the dashboard's 90-day summary). Each replaces the
-- plain (shop_id, created_at) index it extends.
CREATE INDEX idx_memory_shop_created_cover ON conversation_memory (shop_id, created_at)
    INCLUDE (id, tier, confidence);
DROP INDEX idx_memory_shop_created;
CREATE INDEX idx_analytics_shop_created_cover ON response_analytics (shop_id, created_at)
    INCLUDE (conversation_id, ab_test_variant, response_time_ms);
DROP INDEX idx_analytics_shop_created;
CREATE INDEX idx_audit_shop_created_cover ON learning_audit_log (shop_id, created_at)
    INCLUDE (action);
DROP INDEX idx_audit_shop_created;
-- Not covering `observations`: a repeat merged into its item changes it, and must stay a HOT
-- update (tests/test_queue_search.py).
CREATE INDEX idx_learning_shop_created ON learning_queue (shop_id, created_at);
CREATE INDEX idx_learning_shop_applied ON learning_queue (shop_id, applied_at)
    INCLUDE (created_at) WHERE applied_at IS NOT NULL;
