-- API keys are stored as scrypt hashes with a salt of their own (a slow hash), found by their
-- public prefix and compared in constant time. Keys made before this keep their SHA-256 until
-- their first use, when they are hashed again the new way.
ALTER TABLE api_keys
    ADD COLUMN key_salt bytea,
    ADD COLUMN hash_kind text NOT NULL DEFAULT 'sha256' CHECK (hash_kind IN ('sha256', 'scrypt'));
CREATE INDEX idx_api_keys_prefix ON api_keys (prefix);
