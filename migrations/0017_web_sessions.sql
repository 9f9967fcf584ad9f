-- Sign-in sessions of the review pages (/admin): an owner or admin key exchanged for a cookie.
-- Only a hash of the cookie's token is stored; a session dies with its key (revoked or
-- deleted), at its absolute expiry, or after it has been idle too long.
CREATE TABLE web_sessions (
    token_hash    bytea PRIMARY KEY,
    key_id        uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    -- The shop an admin is looking at; NULL for all shops (owners are held to their own).
    shop_id       integer REFERENCES shops (id) ON DELETE SET NULL,
    csrf_token    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX idx_web_sessions_key ON web_sessions (key_id);
CREATE INDEX idx_web_sessions_expiry ON web_sessions (expires_at);
