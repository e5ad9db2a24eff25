// Package store is the gateway's durable state: its sandboxes, every
// sandbox's token generations, and the signing key set. By default it is
// one SQLite file under the state directory (through the pure-Go
// modernc.org/sqlite driver); given a postgres:// DSN it is a Postgres
// database (through pgx v5), which several gateways can share. Both speak
// the same plain SQL and pass the same conformance suite.
//
// # Opening an SQLite file
//
// Open takes these steps, in this order, and stops at the first refusal
// without having changed the file:
//
//  1. The directory must not be writable by group or others (they could
//     swap the file); the error says which chmod to run.
//  2. A missing file is created empty with O_CREAT|O_EXCL and mode 0600
//     before SQLite touches it. An existing file must be a regular file
//     with no group or other permission bits.
//  3. A non-empty file must start with the SQLite header; garbage is
//     refused before any SQLite code reads it.
//  4. Through a read-only connection (mode=ro, so nothing can write): the
//     file must pass PRAGMA quick_check (or integrity_check, with
//     Options.ThoroughCheck) and foreign_key_check, must carry sandkey's
//     application_id (or be empty), and its schema version must not be
//     newer than this binary's. A damaged, foreign or too-new file is
//     refused with its path and what to do next, byte for byte untouched.
//  5. The read-write connections open it in WAL mode with synchronous=FULL
//     (a commit is on disk before it returns), foreign_keys=ON and a busy
//     timeout; the -wal and -shm files get mode 0600 too.
//  6. Pending migrations are applied (see below), and the stored signing
//     keys are decrypted once, so a wrong or missing key file fails here.
//
// Check runs the full integrity_check and foreign_key_check again, for
// instance after a crash or from an operator command.
//
// # Opening a Postgres database
//
//  1. The DSN must parse (ErrInvalidDSN); a connect_timeout of 10 s applies
//     unless it sets one.
//  2. The first connection must succeed (ErrConnect), the error saying
//     which: unreachable, wrong password, unknown database or user.
//  3. The schema the tables live in (current_schema(), from the DSN's
//     search_path) must exist, and be empty or marked as sandkey's by the
//     sandkey_store table (which holds the same application id as the
//     SQLite header); a schema with another program's tables is refused
//     (ErrNotDatabase), and so is a schema version newer than this
//     binary's (ErrSchemaTooNew), before anything is written.
//  4. Migrations and the key check follow, as for SQLite.
//
// No error and no log line carries the DSN's password: they name the
// database by RedactDSN. Check looks for rows whose references dangle
// (Postgres enforces the foreign keys; a manual edit with triggers off can
// still break them).
//
// # Migrations
//
// The schema is a list of SQL files embedded in the binary,
// migrations/sqlite/NNNN_description.sql, numbered from 1 without gaps, and
// their mirror in migrations/postgres/ (same numbers, same names, so one
// schema version means the same on both).
// schema_migrations records each one applied. Each migration runs in its own
// write transaction together with its schema_migrations row, so a crash
// leaves the schema at a version the next Open continues from. Migrations
// only ever move forward; a database that a newer sandkey migrated is refused
// (ErrSchemaTooNew) rather than guessed at. On Postgres each migration
// transaction first takes an advisory lock, so gateways starting together
// on a new database migrate it once, one after the other.
//
// # Concurrency
//
// All writes go through one connection (SetMaxOpenConns(1)) and begin with
// BEGIN IMMEDIATE, which takes SQLite's write lock at the start of the
// transaction: writers in this process queue on the connection, writers in
// other processes on busy_timeout, and no transaction fails halfway on a
// lock upgrade. Reads use a separate pool of query-only connections; in WAL
// mode they see the last committed state and never wait for the writer, so
// a rotation sweep does not stall token checks.
//
// On Postgres, reads and writes share one pool of connections, and writes
// run in parallel at READ COMMITTED. What a write decides from a row, it
// reads with SELECT ... FOR UPDATE, holding the row until commit:
// NextGenerations locks its sandboxes' rows first, in id order whatever the
// caller's order (so two gateways rotating overlapping sets queue instead
// of deadlocking), RecordWritten and RecordDelivered lock their sandbox's
// row before touching its generations, MarkRunningDue locks its rows in id
// order too, and key changes take an advisory lock on the key set (which
// also covers an empty one). A transaction that still loses a race (deadlock,
// serialization failure), or its connection before COMMIT (the server
// restarted and cut the pool's connections), is rolled back and run again,
// up to five times; every transaction function starts from scratch for
// that reason. A failed COMMIT is not run again: it may have committed.
// A read on a connection cut less than a second ago fails once (database/sql
// pings a connection idle for longer before reusing it); its caller retries
// as it would any store error. Reads of several statements run in one
// REPEATABLE READ snapshot.
//
// # Generations
//
// Every sandbox has a generation counter: each token minted for it gets the
// next one, 1, 2, 3... NextGenerations is the only way to mint. In a single
// transaction it, for each requested sandbox:
//
//  1. reads the sandbox's newest generation (sandboxes.latest_gen) and its
//     floor (sandboxes.gen_floor, see below);
//  2. calls the caller's mint function with the next one, above both
//     (signing is pure CPU work, done serially inside the transaction);
//  3. inserts the generation's metadata: jti (unique across the store),
//     kid, iat, exp and the caller's rotation point. Never the token
//     itself: the store keeps no token byte (schema 4 dropped the column
//     that held the two newest), the gateway's memory and the sandbox's
//     token directory on a tmpfs do;
//  4. advances latest_gen and copies the rotation point onto the sandbox
//     row, where DueForRotation finds it with one index range scan.
//
// Each step runs for up to 500 sandboxes per statement (one SELECT, one
// multi-row INSERT, one UPDATE ... WHERE id IN (...) whose values are read
// from the generations just inserted), so a batch of 10,000 costs some
// sixty statements instead of forty thousand; RecordWrittenBatch likewise.
// UPDATE ... FROM (VALUES ...) was tried and rejected: SQLite's planner may
// scan every generation for it.
//
// It returns the generations only after the commit, so a token never leaves
// the gateway before its generation is durable, and a crash can never hand
// out the same generation twice. On Postgres the sandbox rows stay locked
// from step 1 to the commit, so gateways sharing the database never issue
// one generation twice either. Decisions: duplicate ids are minted once;
// ids of sandboxes that do not exist (typically deleted since the sweep
// listed them) are skipped, and the others are still committed and returned,
// together with a *MissingSandboxesError naming the skipped ids; any other
// failure (a mint error, a duplicate jti, an unknown kid) rolls the whole
// batch back.
//
// # A store restored from backup
//
// The store's file may be replaced by an older copy of itself. Its counters
// then lag behind generations that were issued, and whose tokens still
// exist: in the sandbox's token directory, in its supervisor's hands.
// Counting on from the restored counter would issue those numbers again,
// with other jtis. The gateway prevents it with evidence: whenever it sees
// a token signed by its key for a sandbox with a generation above the
// store's counter (in the token directory at reconcile, start and
// reissue; presented by a supervisor), it calls RaiseGenerationFloor,
// which commits gen_floor before anything is minted; NextGenerations then
// counts on from max(latest_gen, gen_floor). The floor never goes down and
// needs no generation row, so a raised floor changes nothing else: the
// unknown token still does not authenticate (IsAcceptable says not
// issued). A blind guard (lifting every counter by a margin at start) was
// rejected: nothing in a restored file says it was restored, and any
// margin is exceeded by an old enough backup.
//
// The revocation rule lives here too: only the two newest generations of an
// existing sandbox authenticate, each only with the jti it was issued with
// (IsAcceptable, AcceptableGenerations). Deleting a sandbox deletes its
// generations by cascade, so all its tokens become unknown at once. The
// store also tracks, per sandbox, the newest generation written into its
// token directory and the newest its supervisor acknowledged; both only
// move forward. PruneGenerations drops the metadata of long-expired
// generations, never the two newest.
//
// # Signing keys
//
// The key set holds Ed25519 seeds with their public keys, in state next
// (published, verifies, signs nothing until its activation time), active
// (signs), verify (verifies only) or retired. A next key is stored as a
// verify key plus a row in key_activations (schema version 2), so the
// schema needed no table rebuild; at most one key is next. A partial unique
// index keeps at most one key active; ActivateKey demotes the old active key
// and ends the new one's wait in the same transaction; KeysDueForActivation
// tells the gateway when. With Options.KeyFile, seeds are encrypted at rest with
// AES-256-GCM (a fresh nonce per key, the kid as additional data); each row
// records whether it is encrypted. KeysInUse tells the gateway which keys
// still have unexpired tokens, so retired ones leave the JWKS only then.
//
// # Replicas (schema version 6)
//
// Gateways sharing a Postgres store coordinate through it. A named lease
// (AcquireLease, ReleaseLease) elects the leader: its expiry is in the
// database's clock (clock_timestamp(); the Go clock on SQLite), and its
// epoch grows each time it changes hands. WithFence marks a context so
// that every write transaction run with it first checks, inside the
// transaction and holding the lease row (FOR KEY SHARE), that the holder still
// holds the lease at its epoch: a deposed leader's write fails with
// ErrFenced and commits nothing, and a takeover (FOR UPDATE) waits for a
// fenced write in flight to commit, while the holder's renewals (FOR NO KEY
// UPDATE) never wait for its own writes. RegisterReplica, HeartbeatReplica and LiveReplicas
// keep the registry of gateways, refusing mixed single and replica modes
// and replicas whose ClusterSettings differ (ErrReplicaConflict);
// SetSessionHolders and SessionHolder say which live replica holds a
// sandbox's session. NextGenerations NOTIFYs ChannelGenerations and the key
// writes ChannelKeys in their transactions; Listen hears them on a
// dedicated connection, reconnecting with backoff and calling Resync after
// every (re)connect.
//
// # Portability
//
// Everything specific to SQLite is in sqlite.go, file.go and
// migrations/sqlite/; everything specific to Postgres in postgres.go and
// migrations/postgres/: connection strings, the checks at open, row locks,
// migration locking and error classification, behind the dialect interface
// (dialect.go). The queries elsewhere use only standard SQL (no RETURNING,
// no database functions; INSERT ... ON CONFLICT, which both speak) with "?" placeholders, which the
// Postgres dialect rebinds to $1, $2...; times are BIGINT Unix nanoseconds
// and booleans INTEGER 0/1 on both, and Postgres' text keys sort bytewise
// (COLLATE "C") as SQLite's do.
//
// pgx is used through database/sql (pgx/v5/stdlib) rather than pgxpool so
// that both dialects share every query, transaction and scan; database/sql's
// pool (eight connections) is the pool.
package store
