-- Issue 17: a booking's Idempotency-Key answer is now stored in the transaction that commits
-- the booking's events, so a key has a row exactly when its booking committed (status is the
-- HTTP status of the stored answer). The code before this wrote a claim (status 0) first and
-- filled it in afterwards; a claim whose request died was left behind and answered
-- "idempotency_key_in_flight" to every retry. Such leftovers say nothing true about their
-- booking: remove them, so a retry decides afresh or finds its answer.
DELETE FROM idempotency WHERE status = 0;
ALTER TABLE idempotency ADD CONSTRAINT idempotency_answered CHECK (status > 0);
