// Package statedir keeps the host-side state of the drivers that run
// sandboxes as host processes: one private directory per sandbox holding
// small JSON records, and an index that finds a sandbox's directory by its
// ID after a gateway restart.
//
// Records are written whole: WriteJSON writes a temporary file in the
// record's directory and renames it over the record, so a reader sees the
// old record or the new one, never a part. It does not fsync: after a host
// crash no recorded process runs any more, so a lost record costs nothing.
//
// The index is the directory <state root>/sandboxes (0700). A sandbox
// whose state directory is elsewhere has there a symlink named by its ID
// that points at its state directory; a sandbox without a state directory
// of its own uses <state root>/sandboxes/<id> itself. Lookup follows the
// entry and reports ErrNoState when there is no entry or no directory
// behind it. Link replaces an entry by renaming a new symlink over it, so
// a concurrent Lookup sees the old target or the new one.
//
// Sandboxes is the part of the process and vm drivers that does not
// depend on what they run: the index, a lock per sandbox, the spec record
// Create writes, and the steps of Create, Start, Stop, Delete, Status and
// Logs around each driver's own launch and stop.
//
// Sandbox IDs name files in the index, so CheckID accepts only IDs that
// can: non-empty, no '/', no NUL, no leading '.', at most 200 bytes.
package statedir
