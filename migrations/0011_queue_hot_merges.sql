-- A merge (one more signal for an item already in the queue, half of all signals) changes an
-- item's observations, signals and confidence. With confidence_score indexed, every merge was a
-- non-HOT update: a new row version with an entry in every index of the table, the open-items
-- HNSW index included (an insertion into a graph), and each merged item left dead copies of
-- its vector in that graph for deduplication searches to wade through until vacuum: 2.4 ms a
-- search during a 6,000-signal run against 0.3 ms after vacuum. The confidence sort of the
-- review list reads every matching row anyway (it counts them), so the index bought nothing.
-- Free room on each page (fillfactor) lets the new version of a merged item stay on its page,
-- which a HOT update needs; the queue is small next to the knowledge it feeds. The setting holds
-- for pages written from now on; pages already full make room as their items are merged,
-- applied and vacuumed.
DROP INDEX IF EXISTS idx_learning_confidence;
ALTER TABLE learning_queue SET (fillfactor = 70);
