// Package gateway is sandkey's control plane: it owns every sandbox's
// credential and runs sandboxes through compute drivers.
//
// The invariants it keeps, in the order the code enforces them:
//
//  1. A generation is committed to the store before its token leaves the
//     gateway (Gateway.mint: store transaction first, then the token
//     directory, then the session push). A crash between the steps can
//     lose a write or a push, never issue a generation twice.
//  2. No sandbox starts on an expired token: Start and resume mint a fresh
//     generation and write it into the token directory before the driver
//     is asked to start anything.
//  3. Tokens rotate at half their lifetime plus up to 10% jitter (Rotation
//     in rotation.go), for all due sandboxes in one store transaction per
//     batch, with the directory writes in parallel.
//  4. On start, before any session is served, every sandbox the store says
//     is running (or whose driver runs an instance the store never
//     recorded) is reconciled with its driver, and re-minted if its token
//     expired or reached its rotation point while the gateway was down.
//  5. Only the two newest generations of a sandbox authenticate; deleting a
//     sandbox revokes all of them at once (its rows go, and with them every
//     generation).
//  6. No generation number is issued twice, even by a store restored from
//     an older backup (floor.go): before minting, the gateway raises the
//     sandbox's generation floor past every generation it sees signed for
//     that sandbox and unknown to the store: in the token directory (at
//     reconcile, start and manual rotation) and in any token a supervisor
//     presents. On an attested socket such a token is answered with a
//     generation above it (Reissue). What no copy of survives, or what
//     only a signing key the restored store lost can vouch for, cannot be
//     seen: a generation that only ever reached a supervisor by push,
//     because its directory write failed, may be numbered again by a
//     reconcile that runs before that supervisor says hello (it still
//     recovers: its Hello is answered above it).
//  7. One gateway per state directory: `gateway serve` locks
//     <state>/gateway.lock (LockStateDir) before it touches anything there.
//  8. A signing key is published before it signs (keys.go): `keys rotate`
//     adds the next key to the JWKS and to every sandbox's directory and
//     session, and the sweep activates it KeyPublishDelay later, at least
//     the JWKS max-age, so a verifier caching /jwks.json knows a key before
//     its first token.
//  9. The gateway is ready (Ready, /readyz, grpc.health.v1) once
//     reconciled, and not while it cannot mint: from a failed sweep to the
//     next that succeeds (readiness.go), nor while the store fails its
//     heartbeat (Postgres).
//  10. Replicas sharing a Postgres store (Config.ReplicaAdvertise;
//     replica.go): one leader at a time reconciles, sweeps, prunes and
//     activates keys, each write fenced by its lease's epoch, so a deposed
//     leader commits nothing; a generation any replica mints reaches the
//     replica holding its session through store.Listen and is signed
//     there again, byte for byte, from its stored claims.
//
// The gateway never imports a concrete driver: pkg/gatewaycmd registers
// them. Nor does anything above it import pkg/store: the gateway has its
// own error values (errors.go; store errors are translated at its exported
// methods) and its own Sandbox and SigningKey views.
package gateway
