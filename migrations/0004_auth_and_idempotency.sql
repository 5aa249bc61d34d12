-- API bearer tokens: only a SHA-256 of each token is kept (tokens are 256-bit random, so a
-- fast hash is enough; nothing here can be turned back into a token).
CREATE TABLE api_tokens
(
    id         bigserial PRIMARY KEY,
    name       text        NOT NULL,
    role       text        NOT NULL CHECK (role IN ('operator', 'distributor')),
    token_hash text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- Idempotency-Key replays. `key_hash` is SHA-256 of (caller, key); `body` is the first answer
-- sealed with a key derived from the Idempotency-Key itself, so this table never holds a
-- readable stream key: only the client that knows the Idempotency-Key can open it.
-- status 0 = the first request is still being decided.
CREATE TABLE idempotency
(
    key_hash     text PRIMARY KEY,
    request_hash text        NOT NULL,
    status       integer     NOT NULL,
    nonce        bytea,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idempotency_by_age ON idempotency (created_at);
