-- Deduplication compares each signal with every open item of its shop and kind (exactly, as
-- answering does for small shops). A queue row is wider than the 2 kB TOAST threshold, so its
-- vector was moved out of line and each comparison read it back from TOAST; kept in the row, a
-- scan reads the heap only (measured: 4.7 ms down to 1.9 ms for 800 open items).
ALTER TABLE learning_queue ALTER COLUMN embedding SET STORAGE PLAIN;

-- The open items of one shop and kind, and the recent ones looked at again under the lock.
CREATE INDEX idx_learning_dedup ON learning_queue (shop_id, kind, created_at)
    WHERE status IN ('pending', 'approved', 'rejected');
