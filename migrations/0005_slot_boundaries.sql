-- The slot clock (issue 3).
--
-- slot_boundaries is the scheduler's outbox: for every accepted reservation, the messages
-- still to be published on SLOTCAST_SLOTS (published_at IS NULL) and those already
-- published. The projector writes it in the same transaction as the read model; scheduler
-- replicas claim due rows with FOR UPDATE SKIP LOCKED, publish, and mark them. It lives in
-- `public`, not in `rm`, because what has been published is delivery state, not something a
-- read-model rebuild could derive from the events.
--
-- slot_cursor is its projection cursor: per aggregate, the last event sequence applied to
-- slot_boundaries. It is separate from rm.streams so that a rebuilt read model (whose streams
-- table starts from nothing) never makes an event count as applied here.
CREATE TABLE slot_cursor
(
    aggregate_id  text PRIMARY KEY,
    last_sequence bigint NOT NULL
);

CREATE TABLE slot_boundaries
(
    reservation_id  text        NOT NULL,
    -- opened | closed | changed | cancelled
    kind            text        NOT NULL CHECK (kind IN ('opened', 'closed', 'changed', 'cancelled')),
    -- Bumped by every change to the slot; part of the JetStream message id.
    revision        integer     NOT NULL,
    server_id       text        NOT NULL,
    -- When it must go out, by the server clock: the window edge, or the decision time for
    -- a boundary decided after its edge (changed, cancelled, a late booking).
    due_at          timestamptz NOT NULL,
    -- The slot as this revision has it (the message payload).
    opens_at        timestamptz NOT NULL,
    closes_at       timestamptz NOT NULL,
    start_at        timestamptz NOT NULL,
    end_at          timestamptz NOT NULL,
    stream_key_hash text        NOT NULL,
    ingest          jsonb       NOT NULL,
    -- Publication order within a reservation.
    seq             bigserial   NOT NULL UNIQUE,
    published_at    timestamptz,
    late_ms         double precision,
    published_by    text,
    PRIMARY KEY (reservation_id, kind, revision)
);
CREATE INDEX slot_boundaries_due ON slot_boundaries (due_at) WHERE published_at IS NULL;
CREATE INDEX slot_boundaries_pending ON slot_boundaries (reservation_id, seq)
    WHERE published_at IS NULL;

-- A database that already has reservations: the outbox starts where the read model is (so
-- old history is not replayed into it), with the boundaries still to come for accepted
-- reservations whose window has not closed (an open window is announced at once).
INSERT INTO slot_cursor (aggregate_id, last_sequence)
SELECT aggregate_id, last_sequence FROM rm.streams;
INSERT INTO slot_boundaries (reservation_id, kind, revision, server_id, due_at, opens_at,
                             closes_at, start_at, end_at, stream_key_hash, ingest)
SELECT r.id, k.kind, 1, r.server_id,
       greatest(CASE k.kind WHEN 'opened' THEN r.opens_at ELSE r.closes_at END, now()),
       r.opens_at, r.closes_at, r.start_at, r.end_at, r.stream_key_hash, '{"mode": "push"}'
FROM rm.reservations r
CROSS JOIN (VALUES ('opened', 1), ('closed', 2)) AS k(kind, n)
WHERE r.status = 'accepted' AND r.closes_at > now()
ORDER BY r.id, k.n;

-- What the streamer reported, for the reservation's status:
-- accepted -> live (an ingest connected) -> ended (window closed after ingest), or missed
-- (window closed without any).
ALTER TABLE rm.reservations
    ADD COLUMN ingest          text,
    ADD COLUMN ingest_carrier  text,
    ADD COLUMN ingest_at       timestamptz,
    ADD COLUMN ingested        boolean NOT NULL DEFAULT false;
