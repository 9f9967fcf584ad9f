-- The review listing (GET /v1/queue, /admin/queue) filters and sorts a shop's items by status,
-- kind, source, priority, observations, confidence, similarity and age, and counts them. On
-- learning_queue itself that meant reading every matching row of a wide table (each row keeps
-- its vector in line, migration 0008, and its signals): 110-200 ms of PostgreSQL's CPU a
-- listing at 100,000 items (benchmarks/review_listing.py). The sorts by priority, observations and confidence cannot be
-- served by indexes on learning_queue: a merge changes observations and confidence (and now and
-- then priority), and an index over them would make every merge a non-HOT update, with an
-- insertion into the open-items HNSW graph (migration 0011).
--
-- So the listing reads a narrow copy of each item's filter and sort columns, kept by triggers
-- in the same transaction as the item (a merge updates its small row too, non-HOT there, which
-- costs a few btree insertions and no graph insertion), with one index per sort order; the
-- page's items are then read from learning_queue by their keys. Keyed, and pointing at its
-- item, by shop, as every tenant table (migration 0023).
CREATE TABLE learning_queue_listing (
    shop_id            integer NOT NULL,
    id                 uuid NOT NULL,
    status             varchar(20) NOT NULL,
    kind               varchar(20) NOT NULL,
    source_type        varchar(20) NOT NULL,
    priority           varchar(20) NOT NULL,
    priority_rank      smallint GENERATED ALWAYS AS (
                           CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1
                                         WHEN 'normal' THEN 2 ELSE 3 END) STORED,
    observations       integer NOT NULL,
    confidence_score   integer NOT NULL,
    nearest_similarity real,
    conflict           boolean NOT NULL,
    created_at         timestamptz NOT NULL,
    PRIMARY KEY (shop_id, id),
    FOREIGN KEY (shop_id, id) REFERENCES learning_queue (shop_id, id) ON DELETE CASCADE
);

INSERT INTO learning_queue_listing (shop_id, id, status, kind, source_type, priority,
                                    observations, confidence_score, nearest_similarity,
                                    conflict, created_at)
SELECT shop_id, id, status, kind, source_type, priority, observations, confidence_score,
       nearest_similarity, conflict_entry_id IS NOT NULL, created_at
FROM learning_queue;

-- One index per sort order of knowledge/learning/review.py (newest and age share one), ties
-- broken by id as there. Each carries the status, the filter nearly every listing has, so that
-- a page far down the pending items is found in the index alone (once vacuum has marked the
-- pages visible: the table is small and vacuumed often).
CREATE INDEX idx_listing_priority ON learning_queue_listing
    (shop_id, priority_rank, observations DESC, created_at, id) INCLUDE (status);
CREATE INDEX idx_listing_observations ON learning_queue_listing
    (shop_id, observations DESC, created_at, id) INCLUDE (status);
CREATE INDEX idx_listing_created ON learning_queue_listing (shop_id, created_at, id)
    INCLUDE (status);
CREATE INDEX idx_listing_confidence ON learning_queue_listing
    (shop_id, confidence_score DESC, created_at, id) INCLUDE (status);
CREATE INDEX idx_listing_similarity ON learning_queue_listing
    (shop_id, nearest_similarity DESC NULLS LAST, created_at, id) INCLUDE (status);
-- The count, in the index alone.
CREATE INDEX idx_listing_count ON learning_queue_listing (shop_id, status)
    INCLUDE (kind, source_type, priority, conflict, created_at);
-- Merges update rows here all the time; vacuum keeps the visibility map (index-only scans)
-- and the table small.
ALTER TABLE learning_queue_listing SET (autovacuum_vacuum_scale_factor = 0.02,
                                        autovacuum_vacuum_insert_scale_factor = 0.02);

CREATE FUNCTION learning_queue_listing_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO learning_queue_listing (shop_id, id, status, kind, source_type, priority,
                                            observations, confidence_score,
                                            nearest_similarity, conflict, created_at)
        VALUES (NEW.shop_id, NEW.id, NEW.status, NEW.kind, NEW.source_type, NEW.priority,
                NEW.observations, NEW.confidence_score, NEW.nearest_similarity,
                NEW.conflict_entry_id IS NOT NULL, NEW.created_at);
    ELSE
        UPDATE learning_queue_listing
        SET status = NEW.status, kind = NEW.kind, source_type = NEW.source_type,
            priority = NEW.priority, observations = NEW.observations,
            confidence_score = NEW.confidence_score,
            nearest_similarity = NEW.nearest_similarity,
            conflict = NEW.conflict_entry_id IS NOT NULL, created_at = NEW.created_at
        WHERE shop_id = NEW.shop_id AND id = NEW.id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER trg_learning_queue_listing_insert AFTER INSERT ON learning_queue
    FOR EACH ROW EXECUTE FUNCTION learning_queue_listing_sync();
-- Only when a listed column changes: an update of an item's signals, texts or review note
-- alone leaves its listing row as it is. (An item never moves to another shop: its key and
-- its references name the shop.)
CREATE TRIGGER trg_learning_queue_listing_update AFTER UPDATE ON learning_queue
    FOR EACH ROW
    WHEN ((OLD.status, OLD.kind, OLD.source_type, OLD.priority, OLD.observations,
           OLD.confidence_score, OLD.nearest_similarity, OLD.conflict_entry_id IS NOT NULL,
           OLD.created_at)
          IS DISTINCT FROM
          (NEW.status, NEW.kind, NEW.source_type, NEW.priority, NEW.observations,
           NEW.confidence_score, NEW.nearest_similarity, NEW.conflict_entry_id IS NOT NULL,
           NEW.created_at))
    EXECUTE FUNCTION learning_queue_listing_sync();
ANALYZE learning_queue_listing;
