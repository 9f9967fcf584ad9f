-- Every revoked or deleted key is announced on a channel that each learnkb process listens to
-- (knowledge/store/key_revocations.py), so a process trusts the keys it has verified without a
-- query per request and still drops a revoked one at once. The notification is sent when the
-- revoking transaction commits, before its caller hears back.
CREATE FUNCTION notify_key_revoked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('learnkb_key_revoked', OLD.id::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER trg_api_keys_revoked AFTER UPDATE OF revoked_at ON api_keys
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION notify_key_revoked();
CREATE TRIGGER trg_api_keys_deleted AFTER DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION notify_key_revoked();
