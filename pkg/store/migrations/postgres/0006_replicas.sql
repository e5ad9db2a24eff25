-- sandkey store, schema version 6 (Postgres; mirrors migrations/sqlite):
-- gateway replicas sharing one database.
--
-- leases: named leases (one, "leader", today) with a holder, an epoch that
-- grows at every change of holder, and an expiry in the database's clock.
-- A write run under a lease's fence first checks its row (store.WithFence).
CREATE TABLE leases (
    name       TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    holder     TEXT COLLATE "C" NOT NULL,
    epoch      BIGINT NOT NULL CHECK (epoch >= 0),
    expires_at BIGINT NOT NULL
);

-- replicas: the gateways using this database, each heartbeating its row
-- (expires_at in the database's clock). settings are the values replicas
-- must agree on (issuer, audience, trust domain, token lifetime); origin is
-- the host and state directory, one gateway's at a time (its lock).
CREATE TABLE replicas (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    admin_addr TEXT NOT NULL,
    mode       TEXT NOT NULL CHECK (mode IN ('single', 'replica')),
    settings   TEXT NOT NULL,
    origin     TEXT NOT NULL DEFAULT '',
    expires_at BIGINT NOT NULL
);

-- session_holders: which replica holds the supervisor session of a
-- sandbox. A row naming a replica that is no longer live means nobody.
CREATE TABLE session_holders (
    sandbox_id TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES sandboxes (id) ON DELETE CASCADE,
    replica_id TEXT COLLATE "C" NOT NULL
);
CREATE INDEX session_holders_by_replica ON session_holders (replica_id);
