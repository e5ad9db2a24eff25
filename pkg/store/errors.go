package store

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Every error the store returns wraps one of these where the
// caller may want to act on the cause, and names the input that caused it.
var (
	// ErrNotFound: the sandbox or key does not exist (or was deleted).
	ErrNotFound = errors.New("not found")
	// ErrNameTaken: another sandbox already has this name.
	ErrNameTaken = errors.New("sandbox name already taken")
	// ErrNoGeneration: the sandbox exists but no token was minted for it yet.
	ErrNoGeneration = errors.New("no token generation minted yet")
	// ErrUnknownGeneration: a generation the store never issued was reported
	// as written or delivered.
	ErrUnknownGeneration = errors.New("generation was never issued")
	// ErrInsecurePermissions: the database file, its directory or the key
	// file can be read or written by users other than the owner.
	ErrInsecurePermissions = errors.New("insecure permissions")
	// ErrNotDatabase: the file is not an SQLite database, is damaged, or is
	// an SQLite database of another program; or the Postgres schema holds
	// another program's tables.
	ErrNotDatabase = errors.New("not a usable sandkey database")
	// ErrLocation: an SQLite store's path is in a directory that does not
	// exist or is not a directory.
	ErrLocation = errors.New("store location unusable")
	// ErrKeyFile: the key file cannot be opened or read, or does not hold
	// a key (ErrInsecurePermissions for one others can read).
	ErrKeyFile = errors.New("key file unusable")
	// ErrInvalidDSN: a Postgres store location does not parse.
	ErrInvalidDSN = errors.New("invalid Postgres DSN")
	// ErrConnect: the Postgres server cannot be reached, or refused the
	// user, the password or the database.
	ErrConnect = errors.New("cannot connect to the store database")
	// ErrSchemaTooNew: the database was migrated by a newer sandkey.
	ErrSchemaTooNew = errors.New("database schema is newer than this binary")
	// ErrWrongKeyFile: the key file does not decrypt the stored signing keys,
	// or encrypted keys are stored and no key file was given.
	ErrWrongKeyFile = errors.New("signing keys cannot be decrypted")
	// ErrNoActiveKey: no signing key is active.
	ErrNoActiveKey = errors.New("no active signing key")
	// ErrActiveKeyExists: inserting a second active key; activate it with
	// ActivateKey instead.
	ErrActiveKeyExists = errors.New("another signing key is already active")
	// ErrKeyState: the key is in a state that forbids the operation
	// (activating a retired key, retiring the active key).
	ErrKeyState = errors.New("signing key state forbids this")
	// ErrInvalid: an argument is malformed (unknown state, bad key length,
	// an inconsistent minted token).
	ErrInvalid = errors.New("invalid argument")
)

// MissingSandboxesError is returned by NextGenerations next to the
// generations it did commit when some of the requested sandboxes do not
// exist (typically deleted between a rotation sweep's query and its mint).
type MissingSandboxesError struct {
	IDs []string
}

func (e *MissingSandboxesError) Error() string {
	// A sweep over thousands of sandboxes must not produce a megabyte error.
	const shown = 10
	ids := e.IDs
	more := ""
	if len(ids) > shown {
		more = fmt.Sprintf(" and %d more", len(ids)-shown)
		ids = ids[:shown]
	}
	return fmt.Sprintf("%d sandboxes not found, skipped: %s%s",
		len(e.IDs), strings.Join(ids, ", "), more)
}

// Unwrap makes errors.Is(err, ErrNotFound) true.
func (e *MissingSandboxesError) Unwrap() error { return ErrNotFound }
