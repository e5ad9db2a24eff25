-- sandkey store, schema version 5 (Postgres; mirrors migrations/sqlite):
-- the store keeps no raw token.
--
-- Up to schema 4, generations.token held the raw JWT of each sandbox's two
-- newest generations, for the gateway to answer a supervisor after a
-- restart. The gateway now takes that token from the sandbox's token
-- directory (a tmpfs) or mints a new generation. Postgres drops the column
-- from the catalogue at once; the old values stay in the table's pages
-- until rows are rewritten or VACUUM FULL runs (those tokens expire within
-- one token lifetime anyway).
DROP INDEX generations_with_token;
ALTER TABLE generations DROP COLUMN token;
