-- sandkey store, schema version 4 (Postgres; mirrors migrations/sqlite): the backend's own name of a sandbox's
-- current run (Kubernetes: the pod's UID), recorded at start. The
-- credential exchange accepts only a credential bound to that run.
ALTER TABLE sandboxes ADD COLUMN run_id TEXT NOT NULL DEFAULT '';
