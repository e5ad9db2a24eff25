-- sandkey store, schema version 1 (Postgres; mirrors migrations/sqlite).
-- Times are Unix nanoseconds (BIGINT); generations are BIGINT counters
-- starting at 1; booleans are INTEGER 0/1, as in SQLite, so the queries are
-- the same. Text identifiers sort bytewise (COLLATE "C"), as in SQLite.

-- Marks the schema as a sandkey store (SQLite's application_id): Open
-- refuses a schema that holds tables but not this row.
CREATE TABLE sandkey_store (
    application_id BIGINT NOT NULL PRIMARY KEY CHECK (application_id = 1396984665) -- "SDKY"
);
INSERT INTO sandkey_store (application_id) VALUES (1396984665);

CREATE TABLE sandboxes (
    id            TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name          TEXT COLLATE "C" NOT NULL UNIQUE,
    driver        TEXT    NOT NULL,
    state         TEXT    NOT NULL
                          CHECK (state IN ('created', 'running', 'stopped', 'vanished')),
    spec          TEXT    NOT NULL,
    instance_id   TEXT    NOT NULL DEFAULT '',
    -- Token bookkeeping: the newest generation minted, the newest written
    -- into the token directory, the newest the supervisor acknowledged.
    latest_gen    BIGINT  NOT NULL DEFAULT 0 CHECK (latest_gen >= 0),
    written_gen   BIGINT  NOT NULL DEFAULT 0 CHECK (written_gen >= 0),
    delivered_gen BIGINT  NOT NULL DEFAULT 0 CHECK (delivered_gen >= 0),
    -- When the newest generation is due for rotation (copied from it so the
    -- rotation sweep is one index range scan); 0 = due now.
    rotate_at     BIGINT  NOT NULL DEFAULT 0,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);

CREATE INDEX sandboxes_rotation ON sandboxes (state, rotate_at);

CREATE TABLE signing_keys (
    kid         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    -- The Ed25519 seed, or nonce || AES-256-GCM(seed) when encrypted = 1.
    private_key BYTEA   NOT NULL,
    public_key  BYTEA   NOT NULL,
    encrypted   INTEGER NOT NULL CHECK (encrypted IN (0, 1)),
    state       TEXT    NOT NULL CHECK (state IN ('active', 'verify', 'retired')),
    created_at  BIGINT  NOT NULL,
    retired_at  BIGINT
);

-- At most one active signing key, enforced by the database itself.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (state) WHERE state = 'active';

CREATE TABLE generations (
    sandbox_id TEXT COLLATE "C" NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    gen        BIGINT  NOT NULL CHECK (gen > 0),
    jti        TEXT COLLATE "C" NOT NULL UNIQUE,
    kid        TEXT COLLATE "C" NOT NULL REFERENCES signing_keys (kid),
    issued_at  BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL,
    rotate_at  BIGINT  NOT NULL,
    -- The raw JWT, kept only for the two newest generations of a sandbox.
    token      TEXT,
    written    INTEGER NOT NULL DEFAULT 0 CHECK (written IN (0, 1)),
    PRIMARY KEY (sandbox_id, gen)
);

-- Finds the (at most two) rows still holding a token without scanning history.
CREATE INDEX generations_with_token ON generations (sandbox_id, gen) WHERE token IS NOT NULL;
-- Answers "does any unexpired token use this key".
CREATE INDEX generations_kid_expiry ON generations (kid, expires_at);
