-- Deduplication compares a signal with its shop's open items of the same kind (pending,
-- approved, and rejected ones kept as a negative cache). Scanned exactly, that cost grew with
-- the queue (4.3 ms a signal at 2,000 items); a large queue is now searched through an HNSW
-- index with iterative scans, as answering searches a large shop. The index holds open items
-- only, so items that were applied or merged do not dilute the search or cost an insertion.
-- Every new item and every merge (an update of an indexed row) inserts into it, so it is built
-- lean, as the index it replaces was: a duplicate lies very near, which a lean graph finds.
DROP INDEX IF EXISTS idx_learning_embedding_hnsw;
CREATE INDEX idx_learning_open_hnsw ON learning_queue USING hnsw (embedding vector_cosine_ops)
    WITH (m = 8, ef_construction = 32)
    WHERE status IN ('pending', 'approved', 'rejected');
