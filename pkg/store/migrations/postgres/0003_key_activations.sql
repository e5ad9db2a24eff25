-- sandkey store, schema version 3 (Postgres; mirrors migrations/sqlite):
-- signing keys published before they sign.
--
-- A key with a row here is a "next" key: its row in signing_keys stays in
-- state 'verify' (it is in the JWKS and verifies; it signs nothing), and at
-- activate_at the gateway makes it the active key and deletes the row.
-- Verifiers that cache the JWKS so learn a key before any token uses it.
CREATE TABLE key_activations (
    kid         TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES signing_keys (kid) ON DELETE CASCADE,
    activate_at BIGINT NOT NULL
);
