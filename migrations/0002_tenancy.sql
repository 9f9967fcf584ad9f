-- Shops own everything; API keys belong to a shop (owner, bot) or to no shop (admin).
CREATE TABLE shops (
    id                      integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug                    text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name                    text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    auto_approve_threshold  smallint NOT NULL DEFAULT 85
                            CHECK (auto_approve_threshold BETWEEN 0 AND 100),
    answer_threshold        real NOT NULL DEFAULT 0.7 CHECK (answer_threshold BETWEEN 0 AND 1),
    options_threshold       real NOT NULL DEFAULT 0.4 CHECK (options_threshold BETWEEN 0 AND 1),
    settings                jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CHECK (options_threshold <= answer_threshold)
);
CREATE TRIGGER trg_shops_updated_at BEFORE UPDATE ON shops
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE api_keys (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    shop_id       integer REFERENCES shops (id) ON DELETE CASCADE,
    role          text NOT NULL CHECK (role IN ('admin', 'owner', 'bot')),
    name          text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    prefix        text NOT NULL,
    key_hash      bytea NOT NULL UNIQUE,
    created_by    uuid REFERENCES api_keys (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    CHECK ((role = 'admin') = (shop_id IS NULL))
);
CREATE INDEX idx_api_keys_shop ON api_keys (shop_id) WHERE revoked_at IS NULL;
