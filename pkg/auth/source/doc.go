// Package source is the supervisor's token source (DESIGN.md §5): it holds
// the newest valid token of its sandbox, whichever channel brought it, and
// puts it on every outgoing RPC.
//
// Candidates come from two channels. The token directory (usually
// /run/sandkey/auth, read with tokendir.ReadFile) is read once by [New],
// again whenever fsnotify reports a change of ..data, token or jwks.json in
// the directory (the directory is watched, never the file: a watch on a
// file follows the old inode after the first rename), and again on every
// poll tick regardless, because change notifications do not cross
// virtio-fs. The session offers the tokens the gateway sends, with the
// gateway's JWKS, through [Source.Offer].
//
// A candidate is accepted only if
//
//  1. it parses, and its signature verifies (EdDSA only) against a key of
//     the directory's jwks.json (re-read with every directory read) or of
//     the JWKS the session sent last;
//  2. its sandbox_id is this source's;
//  3. it has not expired (auth.Leeway of skew allowed), and iss, aud and sub
//     are what the Config asks for;
//  4. its gen is strictly higher than the current token's. An equal gen is
//     a no-op, not a rejection. After [Source.MarkRejected] (the gateway
//     refused the current token as expired or superseded) the next valid
//     candidate wins whatever its gen: this recovers from a gateway store
//     restored from a backup.
//
// A rejected candidate leaves the current token in place; it is logged
// with its reason and, when it parses, its gen and jti (never the token
// itself), and counted in sandkey_supervisor_token_rejected_total{reason,
// origin}. The directory is re-read every poll, so one bad file would be
// reported every second: a directory rejection identical to the previous
// one is logged at debug level and not counted again.
//
// The current token is an atomic pointer: [Source.Current] and the gRPC
// credentials of [Source.PerRPCCredentials] read it on every call, so a
// swap takes effect on the next RPC. The token held may have expired when
// nothing newer came; the gateway's answer to it (and MarkRejected) is how
// the supervisor recovers. Other parts of the supervisor follow changes
// through [Source.Subscribe]: a channel of size one that always holds the
// newest token.
//
// The directory is watched through the process's one shared inotify
// instance (Config.Watcher, see pkg/dirwatch): inotify instances are a
// per-user kernel limit that every supervisor of the host user draws on.
// The poll interval is 1 s where the directory is FUSE (virtio-fs in a
// Linux guest reports FUSE's magic) or Docker Desktop's virtio-fs share
// (magic 0x6a656a63), where notifications never arrive, and 30 s elsewhere,
// where fsnotify does the work and the poll is a safety net. While the
// directory is not watched (no inotify instance was left for this user, or
// the directory is missing) it is polled every UnwatchedPollInterval (1 s),
// so a token written while the gateway recovers is still seen at once.
//
// The Source owns one goroutine (watch and poll), and the watcher it made
// when Config.Watcher was nil; [Source.Close], or the end of the context
// given to New, stops both.
package source
