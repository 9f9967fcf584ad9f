-- Documents, the versioned knowledge base, and the vectors it is searched by.
CREATE TABLE documents (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    shop_id       integer NOT NULL REFERENCES shops (id) ON DELETE CASCADE,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 300),
    media_type    text NOT NULL,
    content_hash  text NOT NULL,
    byte_size     integer NOT NULL,
    chunk_count   integer NOT NULL DEFAULT 0,
    version       integer NOT NULL DEFAULT 1,
    metadata      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz
);
CREATE UNIQUE INDEX idx_documents_shop_name ON documents (shop_id, name);
CREATE TRIGGER trg_documents_updated_at BEFORE UPDATE ON documents
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- One row per version of an entry. entry_id is stable across versions; a change inserts a new
-- row and closes the old one (valid_to, superseded_by), so history is never overwritten.
CREATE TABLE knowledge_base_rag (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    entry_id         uuid NOT NULL,
    version          integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    shop_id          integer NOT NULL REFERENCES shops (id) ON DELETE CASCADE,
    category         varchar(100),
    question         text,
    variants         text[] NOT NULL DEFAULT '{}',
    answer           text NOT NULL,
    content          text NOT NULL,
    embedding        vector(384),
    embedding_model  text,
    source           varchar(20) NOT NULL DEFAULT 'manual'
                     CHECK (source IN ('manual', 'document', 'learning', 'import', 'demo')),
    document_id      uuid REFERENCES documents (id) ON DELETE SET NULL,
    chunk_index      integer,
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
    search_tsv       tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
    created_by       text,
    change_reason    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    valid_from       timestamptz NOT NULL DEFAULT now(),
    valid_to         timestamptz,
    supersedes       uuid REFERENCES knowledge_base_rag (id),
    superseded_by    uuid REFERENCES knowledge_base_rag (id)
);
CREATE UNIQUE INDEX idx_kb_live_entry ON knowledge_base_rag (entry_id) WHERE valid_to IS NULL;
CREATE INDEX idx_kb_entry_history ON knowledge_base_rag (entry_id, version);
CREATE INDEX idx_kb_shop_live ON knowledge_base_rag (shop_id, created_at) WHERE valid_to IS NULL;
CREATE INDEX idx_kb_shop_category ON knowledge_base_rag (shop_id, category) WHERE valid_to IS NULL;
CREATE INDEX idx_kb_document ON knowledge_base_rag (document_id) WHERE valid_to IS NULL;
-- On the tsvector alone: a (shop_id, search_tsv) GIN index (btree_gin) must intersect the
-- shop's whole posting list with the word's, which made a rare word cost 1 ms at 10,000 entries.
-- Full-text queries here ask for rare words only, so filtering by shop afterwards is cheap.
-- fastupdate off: with it, every search scans the list of not-yet-merged insertions, which cost
-- 1 ms per query after a bulk load; knowledge is read far more often than written.
CREATE INDEX idx_kb_search_tsv ON knowledge_base_rag USING gin (search_tsv)
    WITH (fastupdate = off) WHERE valid_to IS NULL;
-- Searches go through knowledge_vectors; this one serves ad-hoc similarity over entries, so it is
-- built lean (it is maintained on every write of knowledge).
CREATE INDEX idx_kb_embedding_hnsw ON knowledge_base_rag USING hnsw (embedding vector_cosine_ops)
    WITH (m = 8, ef_construction = 32) WHERE valid_to IS NULL;
CREATE TRIGGER trg_kb_updated_at BEFORE UPDATE ON knowledge_base_rag
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- The live search index: one vector per question, question variant or document chunk of a live
-- entry. Several variants of one entry are several rows here, found together by entry_id.
CREATE TABLE knowledge_vectors (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    shop_id       integer NOT NULL REFERENCES shops (id) ON DELETE CASCADE,
    entry_id      uuid NOT NULL,
    knowledge_id  uuid NOT NULL REFERENCES knowledge_base_rag (id) ON DELETE CASCADE,
    kind          varchar(10) NOT NULL CHECK (kind IN ('question', 'variant', 'answer', 'chunk')),
    text          text NOT NULL,
    embedding     vector(384) NOT NULL
);
CREATE INDEX idx_kv_shop ON knowledge_vectors (shop_id);
CREATE INDEX idx_kv_knowledge ON knowledge_vectors (knowledge_id);
CREATE INDEX idx_kv_embedding_hnsw ON knowledge_vectors USING hnsw (embedding vector_cosine_ops);

-- Which model made the stored vectors, and what it said about a fixed probe sentence, so a
-- change of model (or a backend that is not equivalent) is caught at start-up.
CREATE TABLE embedding_models (
    name          text PRIMARY KEY,
    dimensions    integer NOT NULL,
    backend       text NOT NULL,
    probe_text    text NOT NULL,
    probe_vector  vector NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    checked_at    timestamptz NOT NULL DEFAULT now()
);
