-- The read model lives in its own schema so `slotcast admin rebuild` can build a fresh copy
-- beside it (CREATE TABLE ... LIKE ... INCLUDING ALL) and swap the two by renaming schemas.
-- Every row here is derived from events alone (times come from the events), so a rebuild
-- yields identical tables.
CREATE SCHEMA rm;

-- Per aggregate, the last event sequence applied: makes every projection path idempotent.
CREATE TABLE rm.streams
(
    aggregate_id  text PRIMARY KEY,
    last_sequence bigint NOT NULL
);

-- The catch-up projector's position in the global order (see 0002).
CREATE TABLE rm.checkpoint
(
    name     text PRIMARY KEY,
    txid     xid8   NOT NULL,
    position bigint NOT NULL
);
INSERT INTO rm.checkpoint (name, txid, position) VALUES ('catch_up', '0', 0);

CREATE TABLE rm.servers
(
    id             text PRIMARY KEY,
    name           text        NOT NULL,
    capacity       integer     NOT NULL,
    min_lead_s     bigint      NOT NULL,
    max_duration_s bigint      NOT NULL,
    horizon_s      bigint      NOT NULL,
    preroll_s      bigint      NOT NULL,
    grace_s        bigint      NOT NULL,
    carriers       jsonb       NOT NULL,
    registered_at  timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);

-- Every request, accepted or not: status is accepted, rejected or cancelled.
CREATE TABLE rm.reservations
(
    id              text PRIMARY KEY,
    server_id       text        NOT NULL,
    owner           text        NOT NULL,
    title           text,
    start_at        timestamptz NOT NULL,
    end_at          timestamptz NOT NULL,
    opens_at        timestamptz,
    closes_at       timestamptz,
    status          text        NOT NULL,
    reason          text,
    stream_key_hash text,
    requested_at    timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX reservations_by_owner ON rm.reservations (owner, start_at);
CREATE INDEX reservations_by_server ON rm.reservations (server_id, start_at);

-- Each server's schedule: the slots it holds (accepted, not cancelled).
CREATE TABLE rm.schedule
(
    server_id      text        NOT NULL,
    reservation_id text        NOT NULL,
    start_at       timestamptz NOT NULL,
    end_at         timestamptz NOT NULL,
    PRIMARY KEY (server_id, reservation_id)
);
CREATE INDEX schedule_by_time ON rm.schedule (server_id, start_at);
