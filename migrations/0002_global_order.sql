-- A global order over all events, which postgres-es does not keep.
--
-- `txid` is the writing transaction (assigned before `position`'s nextval, as it is the earlier
-- column). Catch-up readers take only events of transactions older than
-- pg_snapshot_xmin(pg_current_snapshot()) -- every one of those has finished -- in
-- (txid, position) order, and keep (txid, position) as their checkpoint. Any transaction still
-- able to commit has txid >= that xmin, so nothing that commits late can fall behind a
-- checkpoint. (Ordering by position alone can skip: a transaction may take a smaller position
-- yet commit after a larger one was read.)
ALTER TABLE events ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();
ALTER TABLE events ADD COLUMN position bigserial NOT NULL UNIQUE;
CREATE INDEX events_global_order ON events (txid, position);

-- The reservation an event concerns, from the metadata slotcast writes with every event, so
-- a reservation's history is one index scan.
ALTER TABLE events ADD COLUMN reservation_id text
    GENERATED ALWAYS AS (metadata ->> 'reservation_id') STORED;
CREATE INDEX events_by_reservation ON events (reservation_id, aggregate_id, sequence)
    WHERE reservation_id IS NOT NULL;
