-- Whole conversations logged by the bot runtime in bulk: a client-supplied turn id makes a
-- retried batch a no-op, and logged questions are embedded afterwards by a job.
ALTER TABLE conversation_memory
    ADD COLUMN client_turn_id varchar(200),
    ADD COLUMN logged boolean NOT NULL DEFAULT false;
CREATE UNIQUE INDEX idx_memory_client_turn ON conversation_memory (shop_id, client_turn_id)
    WHERE client_turn_id IS NOT NULL;
CREATE INDEX idx_memory_user ON conversation_memory (shop_id, user_id)
    WHERE user_id IS NOT NULL;
-- The embed job's work list: logged turns whose question has no vector yet.
CREATE INDEX idx_memory_unembedded ON conversation_memory (created_at)
    WHERE logged AND embedding IS NULL;
-- Logged turns whose knowledge gap is still to be opened (the bot was unsure or handed over).
CREATE INDEX idx_memory_gap_pending ON conversation_memory (created_at)
    WHERE logged AND metadata ? 'gap_pending';
