-- pgvector for embeddings; btree_gin so one GIN index serves "this shop's entries matching
-- these lexemes" instead of matching every shop's rows and filtering afterwards.
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS btree_gin;

CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;
