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
//     is running is reconciled with its driver, and re-minted if its token
//     expired or reached its rotation point while the gateway was down.
//  5. Only the two newest generations of a sandbox authenticate; deleting a
//     sandbox revokes all of them at once (its rows go, and with them every
//     generation).
//  6. A signing key is published before it signs (keys.go): `keys rotate`
//     adds the next key to the JWKS and to every sandbox's directory and
//     session, and the sweep activates it KeyPublishDelay later, at least
//     the JWKS max-age, so a verifier caching /jwks.json knows a key before
//     its first token.
//  7. The gateway is ready (Ready, /readyz, grpc.health.v1) once
//     reconciled, and not while it cannot mint: from a failed sweep to the
//     next that succeeds (readiness.go).
//
// The gateway never imports a concrete driver: cmd/gateway registers them.
package gateway
