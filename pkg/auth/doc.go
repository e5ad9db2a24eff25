// Package auth holds sandkey's token core: the Ed25519 key set and its JWKS,
// and minting and verifying the per-sandbox JWTs of DESIGN.md §3.
//
// A token is a JWS signed with EdDSA (Ed25519) whose header carries `kid`
// (the RFC 7638 thumbprint of the signing key) and `typ` = "sandkey+jwt".
// Its claims are iss, aud, sub (spiffe://<trust-domain>/sandbox/<id>),
// sandbox_id, gen (the per-sandbox generation, strictly increasing), iat,
// nbf, exp and jti.
//
// Verification pins the algorithm to EdDSA before any key is looked up, so
// "alg: none" and HMAC tokens keyed with a public key are refused without
// touching a key. exp, iat, sub, aud and iss are required; clocks may
// disagree by Leeway. Every failure is a *VerifyError whose Reason is a
// short, metric-safe word; the raw token never appears in an error or in
// Token.String, so errors and tokens can be logged as they are.
//
// The sub-packages hold what is built on top: tokendir, the atomic token
// directory and its safe reader, and source, the supervisor's hot-swapping
// token source.
package auth
