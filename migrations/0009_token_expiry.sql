-- Issue 18, item 7: a token may expire (`slotcast admin token create --expires-in 30d`); NULL
-- never expires. Revocation already had `revoked_at`; a revocation now also notifies
-- `slotcast_tokens`, so every api replica drops its token cache at once.
ALTER TABLE api_tokens ADD COLUMN expires_at timestamptz;
