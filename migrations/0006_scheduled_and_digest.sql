-- The streamer (issue 4).
--
-- 'scheduled': published at booking (and at a change before the window opens), so the
-- streamer knows a future slot's window and can tell an early publisher when it opens (403)
-- instead of "unknown reservation" (404). Reservations booked before this migration get none:
-- their publishers hear 404 until the window opens, as before.
--
-- stream_key_digest: the stream key's RTSP Digest HA1, sealed with the deployment's secret key
-- for the reservation id (never readable here); NULL when the api has no secret key, and for
-- rows from before this migration.
ALTER TABLE slot_boundaries DROP CONSTRAINT slot_boundaries_kind_check;
ALTER TABLE slot_boundaries ADD CONSTRAINT slot_boundaries_kind_check
    CHECK (kind IN ('scheduled', 'opened', 'closed', 'changed', 'cancelled'));
ALTER TABLE slot_boundaries ADD COLUMN stream_key_digest text;
