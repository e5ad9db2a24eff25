-- sandkey store, schema version 6: gateway replicas sharing one database.
-- SQLite serves a single gateway, so these tables hold one replica and its
-- own leader lease; they exist so both dialects share one schema and one
-- code path.
--
-- leases: named leases with a holder, an epoch that grows at every change
-- of holder, and an expiry (Go clock, Unix ns).
CREATE TABLE leases (
    name       TEXT NOT NULL PRIMARY KEY,
    holder     TEXT NOT NULL,
    epoch      BIGINT  NOT NULL CHECK (epoch >= 0),
    expires_at BIGINT  NOT NULL
);

-- replicas: the gateways using this database, each heartbeating its row.
CREATE TABLE replicas (
    id         TEXT NOT NULL PRIMARY KEY,
    admin_addr TEXT NOT NULL,
    mode       TEXT NOT NULL CHECK (mode IN ('single', 'replica')),
    settings   TEXT NOT NULL,
    origin     TEXT NOT NULL DEFAULT '',
    expires_at BIGINT  NOT NULL
);

-- session_holders: which replica holds the supervisor session of a sandbox.
CREATE TABLE session_holders (
    sandbox_id TEXT NOT NULL PRIMARY KEY REFERENCES sandboxes (id) ON DELETE CASCADE,
    replica_id TEXT NOT NULL
);
CREATE INDEX session_holders_by_replica ON session_holders (replica_id);
