-- Issue 20: a tamper-evident trail. Every event row carries `hash`, SHA-256 over its
-- length-prefixed fields (prev_hash, aggregate_id, sequence, event_type, event_version,
-- payload, metadata; payload and metadata exactly as stored), and `prev_hash`, the hash of
-- the aggregate's previous row (32 zero bytes before the first). docs/audit.md has the
-- definition; slotcast_domain::audit::event_hash is the same function, and the api computes
-- the hash of every row it writes. This migration chains the rows already there.
CREATE FUNCTION slotcast_event_hash(prev bytea, aggregate_id text, seq bigint,
                                    event_type text, event_version text,
                                    payload text, metadata text)
    RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT sha256(
        int8send(octet_length(prev)) || prev
        || int8send(octet_length(convert_to(aggregate_id, 'UTF8')))
        || convert_to(aggregate_id, 'UTF8')
        || int8send(octet_length(convert_to(seq::text, 'UTF8'))) || convert_to(seq::text, 'UTF8')
        || int8send(octet_length(convert_to(event_type, 'UTF8'))) || convert_to(event_type, 'UTF8')
        || int8send(octet_length(convert_to(event_version, 'UTF8')))
        || convert_to(event_version, 'UTF8')
        || int8send(octet_length(convert_to(payload, 'UTF8'))) || convert_to(payload, 'UTF8')
        || int8send(octet_length(convert_to(metadata, 'UTF8'))) || convert_to(metadata, 'UTF8'))
$$;

ALTER TABLE events ADD COLUMN prev_hash bytea, ADD COLUMN hash bytea;

DO $$
DECLARE
    r       record;
    genesis CONSTANT bytea := decode(repeat('00', 32), 'hex');
    prev    bytea;
    stream  text := NULL;
BEGIN
    FOR r IN
        SELECT aggregate_type, aggregate_id, sequence, event_type, event_version,
               payload::text AS payload, metadata::text AS metadata
        FROM events
        ORDER BY aggregate_type, aggregate_id, sequence
    LOOP
        IF stream IS DISTINCT FROM r.aggregate_type || '/' || r.aggregate_id THEN
            stream := r.aggregate_type || '/' || r.aggregate_id;
            prev := genesis;
        END IF;
        UPDATE events
        SET prev_hash = prev,
            hash = slotcast_event_hash(prev, r.aggregate_id, r.sequence, r.event_type,
                                       r.event_version, r.payload, r.metadata)
        WHERE aggregate_type = r.aggregate_type
          AND aggregate_id = r.aggregate_id
          AND sequence = r.sequence
        RETURNING hash INTO prev;
    END LOOP;
END
$$;

ALTER TABLE events ALTER COLUMN prev_hash SET NOT NULL, ALTER COLUMN hash SET NOT NULL;

-- Each server's chain head, written outside the rows it covers (at least once a minute, by
-- the api, which also publishes it on NATS): a stream cut short, or rewritten and re-hashed,
-- no longer reaches or matches its anchors.
CREATE TABLE audit_anchors
(
    aggregate_id text        NOT NULL,
    sequence     bigint      NOT NULL,
    hash         bytea       NOT NULL,
    anchored_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_id, sequence)
);
