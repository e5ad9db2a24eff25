// Package admin is the gateway's operator API: the gRPC service
// sandkey.admin.v1.Admin (proto/admin/v1/admin.proto) that `gateway
// sandbox ...` and `gateway keys ...` drive.
//
// Server side:
//
//   - NewServer adapts a *gateway.Gateway to adminpb.AdminServer. Every
//     error leaves it as a gRPC status whose code says what the caller can
//     do about it (NotFound, InvalidArgument, AlreadyExists,
//     FailedPrecondition, ...) and whose message names the sandbox.
//   - ListenUnix creates the operator socket, mode 0600 from the moment it
//     appears under its name: it is bound in a private temporary directory,
//     narrowed, then renamed into place, so no umask ever widens it. The
//     socket's file mode is the whole access control of the unix socket.
//   - The unix socket is served by a plain grpc.Server. The optional TCP
//     listener gets a grpc.Server of its own, built with ServerOptions (or
//     ListenTCP): TLS on every TCP connection, and interceptors that demand
//     the admin bearer token, compared in constant time, on every call that
//     did not arrive through a unix socket.
//   - With replicas sharing a store, exec (plain and interactive) and
//     rotate for a sandbox whose session another replica holds
//     (Holders, the gateway's SessionHolder) are forwarded to that
//     replica's operator API through Peers (WithPeers): one lazily dialed
//     TLS connection per peer address, verified against a CA bundle or
//     a pinned certificate, with the operator token. A forwarded call
//     carries ForwardedByKey metadata and is never forwarded again. Get
//     and List report a session any replica holds, and which one.
//
// Client side, Dial connects to a unix socket path (or unix://path) as is,
// and to host:port over TLS with the admin token as per-call credentials.
package admin
