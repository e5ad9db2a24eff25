// Package pgtest starts a private PostgreSQL server for tests, so that the
// store's conformance suite runs against a real Postgres, never a mock.
//
// # The server
//
// Launch takes these steps:
//
//  1. It finds initdb and postgres on PATH or in the newest
//     /usr/lib/postgresql/<version>/bin (Debian's postgresql package puts
//     them there). When they are missing the error is a *MissingError.
//  2. It makes a private directory under the system temp dir. Postgres
//     refuses to run as root, so when the test runs as root the directory
//     is given to the postgres user and both programs run as that user.
//  3. initdb creates a cluster there (-N: no fsync; C locale, so text
//     sorts bytewise as in SQLite; trust on the unix socket, scram-sha-256
//     over TCP).
//  4. postgres runs as a child of the test, with its unix socket in the
//     directory, listening on 127.0.0.1 at a free port, and with fsync,
//     synchronous_commit and full_page_writes off: a test server need not
//     survive a power cut.
//  5. Launch waits (bounded) until the server answers over its socket, then
//     creates the role sandkey with a random password and a database
//     sandkey it owns.
//
// Stop ends the server by its PID (SIGINT, Postgres' fast shutdown, then
// SIGKILL if it must) and removes the directory. Restart stops it the same
// way and starts it again on the same port and data, cutting every client
// connection, as an operator's restart would; StopServer and StartServer
// are its two halves, for a test that looks at its clients while the
// database is down. Should the test binary die first, the kernel sends
// the server SIGQUIT (Pdeathsig).
//
// # Tests
//
// Starting a server costs 1.5 to 5 s here (initdb, mostly); a package's tests
// share one through a Shared that the package's TestMain stops after m.Run.
// Each test gets a schema of its own (NewSchema), created in a few
// milliseconds, and a DSN whose search_path names it: the DSN a gateway
// would be given, over TCP, with the sandkey role's password.
//
// # Missing Postgres
//
// When Postgres is not installed, a test that asks for it is skipped with a
// message naming the Debian package to install (scripts/test-deps.sh
// installs it), except under CI=true, where it fails: CI must never pass by
// skipping the database.
package pgtest
