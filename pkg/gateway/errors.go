package gateway

import (
	"errors"

	"github.com/sandkey/sandkey/pkg/store"
)

// The gateway's own error values. Its callers (the operator API, the
// command line) classify errors by these, never by the store's: an error
// the store returns is translated at the gateway's exported methods
// (outward), keeping its message.
var (
	// ErrNotFound: no sandbox (or key) by that id or name.
	ErrNotFound = errors.New("not found")
	// ErrExists: the name is already taken by another sandbox.
	ErrExists = errors.New("sandbox name already taken")
	// ErrInvalid: the request itself is wrong (a bad name, spec or driver).
	ErrInvalid = errors.New("invalid argument")
	// ErrNoGeneration: the sandbox has no token yet.
	ErrNoGeneration = errors.New("no token generation minted yet")
	// ErrKeyState: the signing keys' state forbids the operation (a
	// rotation already waiting, no active key).
	ErrKeyState = errors.New("signing key state forbids this")
	// ErrInsecure: a state directory, database or key file others can
	// read or write; the operator must fix it before the gateway starts.
	ErrInsecure = errors.New("insecure permissions")
	// ErrWrongKeyFile: the key file does not decrypt the stored signing
	// keys; the operator must name the right one.
	ErrWrongKeyFile = errors.New("signing keys cannot be decrypted")
	// ErrKeyFile: the key file (--key-file) cannot be read or holds no key.
	ErrKeyFile = errors.New("key file unusable")
	// ErrStoreLocation: the store's location (--store) does not parse,
	// answer or let the gateway in, is in a directory that does not
	// exist, or holds no sandkey database this binary can use.
	ErrStoreLocation = errors.New("store location unusable")
	// ErrReplicaConflict: the store shows another live gateway this one may
	// not run beside (single and replica modes mixed, or replicas whose
	// issuer, audience, trust domain or token lifetime differ).
	ErrReplicaConflict = errors.New("conflicts with another live gateway on the store")
)

// storeKinds maps the store's errors to the gateway's.
var storeKinds = []struct{ from, to error }{
	{store.ErrNotFound, ErrNotFound},
	{store.ErrNameTaken, ErrExists},
	{store.ErrInvalid, ErrInvalid},
	{store.ErrNoGeneration, ErrNoGeneration},
	{store.ErrKeyState, ErrKeyState},
	{store.ErrNoActiveKey, ErrKeyState},
	{store.ErrInsecurePermissions, ErrInsecure},
	{store.ErrWrongKeyFile, ErrWrongKeyFile},
	{store.ErrInvalidDSN, ErrStoreLocation},
	{store.ErrConnect, ErrStoreLocation},
	{store.ErrLocation, ErrStoreLocation},
	{store.ErrNotDatabase, ErrStoreLocation},
	{store.ErrSchemaTooNew, ErrStoreLocation},
	{store.ErrKeyFile, ErrKeyFile},
	{store.ErrReplicaConflict, ErrReplicaConflict},
}

// kindError is an error of the store that also reads as the gateway's
// error value kind; its message is the store's, unchanged.
type kindError struct {
	err  error
	kind error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.err, e.kind} }

// outward translates an error of the store into one of the gateway's
// error values, keeping its message. Errors that wrap none of the store's
// values, or already one of the gateway's, are returned as they are.
func outward(err error) error {
	if err == nil {
		return nil
	}
	for _, k := range storeKinds {
		if errors.Is(err, k.to) {
			return err
		}
	}
	for _, k := range storeKinds {
		if errors.Is(err, k.from) {
			return &kindError{err: err, kind: k.to}
		}
	}
	return err
}

// outwardTo translates *err in place; exported methods defer it.
func outwardTo(err *error) { *err = outward(*err) }
