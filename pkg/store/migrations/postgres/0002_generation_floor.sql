-- sandkey store, schema version 2 (Postgres; mirrors migrations/sqlite): a
-- floor under each sandbox's generation counter. gen_floor is the highest
-- generation of the sandbox seen signed somewhere (its token directory, a
-- supervisor's Hello) that this store may not have issued, as after a
-- restore from an older backup. The next generation minted is above both
-- latest_gen and gen_floor, so no generation number is ever issued twice.
ALTER TABLE sandboxes ADD COLUMN gen_floor BIGINT NOT NULL DEFAULT 0 CHECK (gen_floor >= 0);
