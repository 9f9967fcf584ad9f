-- Every signal writes a queue item (or merges into one), a correction or a feedback row and an
-- audit line, and applying marks items and corrections; each write pays for every index of its
-- table. These indexes served no query of learnkb: a column no query filters on alone
-- (status, source_type, feedback_type, priority, a correction's applied_at), or a prefix of
-- another index (shop_id of the key (shop_id, id); (shop_id, kind) of idx_learning_dedup, whose
-- predicate is wider). With both applied_at indexes gone, marking a correction applied is a
-- HOT update.
DROP INDEX idx_learning_status;          -- idx_learning_status_created leads with status
DROP INDEX idx_learning_shop;            -- the key (shop_id, id)
DROP INDEX idx_learning_source_type;     -- the review listing filters its own copy
DROP INDEX idx_learning_open;            -- idx_learning_dedup (shop_id, kind, created_at)
DROP INDEX idx_learning_rejected;        -- no query looks for a shop's rejected items alone
DROP INDEX idx_feedback_type;
DROP INDEX idx_feedback_type_created;
DROP INDEX idx_corrections_priority;
DROP INDEX idx_corrections_priority_created;
DROP INDEX idx_corrections_applied_at;
DROP INDEX idx_corrections_pending;

-- Two foreign keys had no index on their referencing side, so deleting a queue item (a
-- withdrawn twin, an erasure) scanned the shop's items and out-of-scope examples to check
-- them. Few rows hold a value, so the indexes are partial and cost the other rows nothing.
CREATE INDEX idx_learning_merged_into ON learning_queue (shop_id, merged_into)
    WHERE merged_into IS NOT NULL;
CREATE INDEX idx_oos_queue_item ON out_of_scope_examples (shop_id, queue_item_id)
    WHERE queue_item_id IS NOT NULL;
