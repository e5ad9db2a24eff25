-- sandkey store, schema version 5: the store keeps no raw token.
--
-- Up to schema 4, generations.token held the raw JWT of each sandbox's two
-- newest generations, for the gateway to answer a supervisor after a
-- restart. The gateway now takes that token from the sandbox's token
-- directory (a tmpfs) or mints a new generation, so no token byte reaches
-- the state directory's disk. The column goes, and secure_delete zeroes the
-- bytes it freed in the file's pages (frames of the -wal file are
-- overwritten as the log is reused).
PRAGMA secure_delete = ON;
DROP INDEX generations_with_token;
ALTER TABLE generations DROP COLUMN token;
PRAGMA secure_delete = OFF;
