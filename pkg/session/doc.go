// Package session is the session between a sandbox's supervisor and its
// gateway (DESIGN.md §6 and §7): the protocol (sessionpb, generated from
// proto/session/v1), the transports, the gateway side (Server) and the
// supervisor side (Client).
//
// # Why a session
//
// The token directory delivers every new token, but a supervisor may be
// unable to read it (a microVM whose share went stale) or may have missed a
// push while disconnected. The session closes that gap: at every
// registration the supervisor says which generation it holds and the
// gateway answers with the latest token if it is newer. While connected,
// the gateway pushes each new generation and the supervisor acknowledges
// it; an unacknowledged push is resent, and one that finds no session is
// simply delivered by the next registration. Nothing is queued, so nothing
// can be lost: the registration always compares against the store's latest.
//
// # The protocol, step by step
//
//  1. The supervisor dials (Dial) unix:///path, vsock://CID:PORT,
//     tcp://host:port or tls://host:port and opens Connect. Every call
//     carries its current token as `authorization: Bearer` and its sandbox
//     id as `sandkey-sandbox-id` metadata.
//  2. Its first message, within HelloTimeout (5 s), is Hello{sandbox_id,
//     instance_id, token_gen, version}. Anything else, nothing, a second
//     Hello, or a Hello for another sandbox is Rejected INVALID_HELLO.
//  3. The gateway authenticates the call (see channel identity below),
//     registers the session (superseding the sandbox's previous session,
//     which is ended with SESSION_REPLACED), then reads the latest token:
//     registering first means a generation minted from then on finds the
//     session and is pushed, and one minted before is in the answer.
//  4. It answers Accepted{session_id, heartbeat_interval, token?, token_gen,
//     jwks, token_rejected}. The token is there when the latest generation
//     is newer than Hello.token_gen, or when the token presented is not
//     current (expired, superseded, or never issued by the store);
//     token_rejected then tells the supervisor to mark its token rejected,
//     so that its source takes the answer whatever the generations. A
//     presented token the store never issued (a store restored from
//     backup) is answered by Authority.Reissue with a generation above it,
//     never with a number the supervisor may already hold under another
//     jti.
//  5. Both sides send Heartbeat every interval (10 s); each ends a session
//     that has heard nothing for three intervals.
//  6. Push(sandboxID) wakes the session, which reads the latest token and
//     sends TokenUpdate if the supervisor neither holds nor was sent it.
//     The supervisor offers it to its TokenSource and answers TokenAck once
//     the source holds that generation (or a newer one); the gateway then
//     records it delivered (Authority.RecordDelivered). A push not
//     acknowledged after two intervals is sent again. Heartbeats, silences
//     and resends run on ServerConfig.Clock (the real clock by default),
//     apart from ServerConfig.Now, which judges credentials.
//  7. A session never outlives its credential: its expiry is that of the
//     newest token the supervisor presented (current) or acknowledged. It
//     is checked with ServerConfig.Now at every heartbeat tick, so the
//     session ends, Rejected UNAUTHENTICATED, within one interval of it.
//     An attested session that presented no usable token gets three
//     intervals to acknowledge the token sent in Accepted.
//  8. The gateway runs commands over the session (Server.Exec): it sends
//     ExecRequest{exec_id, argv, env, stdin}; the supervisor runs it with
//     its ExecHandler and streams stdout, stderr and the exit status back
//     on an ExecOutput call of its own, so output never delays heartbeats
//     or pushes. ExecCancel asks it to kill the command.
//  9. An interactive exec (ExecRequest.Input, TTY) sets ExecRequest.stream:
//     the supervisor opens a bidirectional ExecStream call for it instead,
//     whose first chunk names the exec. Output goes up; the operator's
//     stdin, terminal sizes and the end of stdin come down as they come.
//     gRPC's per-stream flow control holds back a large or unread stdin on
//     that call alone, never the Connect stream. With TTY the supervisor
//     allocates a pseudo-terminal and runs the command as the leader of a
//     new session on it. The call ending in an error (the operator went
//     away) makes the supervisor kill the command's process group; a
//     session that ends ends its execs, and Exec says so.
//  9. ReportExit reports the workload's end to ServerConfig.OnExit.
//  10. ExchangeServiceAccountToken (exchange.go) trades a backend's own
//     credential (a pod's projected ServiceAccount token) for the
//     sandbox's token: shared listeners only, nothing over
//     MaxExchangeCredential, the decision is ServerConfig.Exchanger's, and
//     every outcome is counted in sandkey_exchange_total{result}.
//  10. A supervisor that half-closes its stream (a client sending Hello and
//     closing, as grpcurl does) ends the session, but what the gateway
//     queued for it (the Accepted at least) is flushed before the handler
//     returns, within a heartbeat interval.
//
// The supervisor reconnects after any end with exponential backoff and full
// jitter (100 ms to 30 s, reset once a session stayed up 30 s). A Rejected
// UNAUTHENTICATED or SUPERSEDED makes it mark its token rejected. On a unix
// target a backoff ends early, with the backoff started afresh, as soon as
// a socket other than the one of the failed attempt is at the path (a
// restarted gateway): the client watches the socket's directory for all of
// Run through the process's shared inotify instance (ClientConfig.Watcher,
// see pkg/dirwatch) and, where it has none, stats the socket every
// SocketPollInterval (250 ms) while it waits. The same socket never ends a
// backoff early, so a gateway that refused the session is not hammered.
// "The same" is the socket the attempt's dial found: each attempt dials
// afresh and awaits the outcome, because gRPC keeps failing calls with its
// last dial's error until a connection is ready, and that dial may predate
// the new socket.
// A backoff is also cut short when the source takes a new token (from the
// directory) meanwhile: the token may be the one the gateway wanted.
//
// # Channel identity
//
// The gateway serves every listener with one gRPC server. A per-sandbox
// unix socket (ListenSandboxSocket, Listeners.AddSandbox; bind-mounted into
// that sandbox only, or mapped from its vsock port or QEMU forward) marks
// each connection it accepts as attested for its sandbox, through the
// transport credentials installed by ServerOptions; AttestedSandbox reads
// it in a handler. On an attested connection:
//   - every call is for the socket's sandbox: a Hello or metadata naming
//     another is refused;
//   - the bearer is optional (the socket is the identity); when present it
//     must be a genuine token of that sandbox (signature, claims), but it
//     may be expired, superseded or unknown to the store: the supervisor
//     gets the latest, or for an unknown one a generation above it.
//
// On a shared listener (TCP or TLS) only a valid bearer is accepted: not
// expired, of one of the two newest generations, for the sandbox the call
// names. Recovery after expiry there comes from the token directory.
// Exec output is matched to both its exec id and the authenticated
// sandbox, and each exec accepts one output stream (of its kind): a sandbox can neither
// feed nor read another's exec, and learns nothing from trying (NotFound).
//
// # Limits
//
// Messages are capped at MaxMessageSize (1 MiB) both ways, exec stdin at
// MaxExecStdin, and gRPC keepalive is enforced. Hello fields are capped at
// 256 bytes. Tokens are never logged: logs name a token's gen and jti.
//
// # What a session costs the gateway
//
// A connected sandbox holds gRPC's four goroutines (the connection's
// reader, writer and keepalive, and the Connect handler, which reads the
// stream) and nothing else while idle: pushes, acknowledgements, ticks,
// ends and every Send are served by a pump goroutine that runs only while
// there is work, and one ticker serves every session's heartbeats. To end
// a session from elsewhere its stream's context is cancelled (the tap
// installed by ServerOptions makes it cancellable; Connect refuses to
// serve without it), after the Rejected has left: the call itself then
// ends with Canceled, and the Rejected says why. Connections read without a
// buffer of their own (ReadBufferSize 0). Each sandbox socket costs a
// goroutine that accepts and hands its connections to the one gRPC Serve
// of all sandbox sockets. BenchmarkGatewaySessions measures it all.
//
// # Wiring a gateway
//
//	srv := session.NewServer(session.ServerConfig{Authority: store, ...})
//	g := grpc.NewServer(session.ServerOptions(tlsCreds)...)
//	srv.Register(g)
//	ls := session.NewListeners(g, logger)
//	ls.AddShared("tcp", tcpListener)
//	ls.AddSandbox(dir, sandboxID) // per sandbox, on create or start
//	...
//	srv.Close() // ends sessions with Rejected DISCONNECTED
//	ls.Close()
//	g.Stop()
package session
