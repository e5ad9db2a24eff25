package store

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// KeyState is a signing key's place in its rotation.
type KeyState string

// Key states.
const (
	// KeyNext is published (it verifies and is in the JWKS) but signs
	// nothing until its ActivateAt; at most one key is next. The database
	// keeps it as a verify key with a row in key_activations.
	KeyNext KeyState = "next"
	// KeyActive signs new tokens; exactly one key is active.
	KeyActive KeyState = "active"
	// KeyVerify no longer signs but still verifies live tokens.
	KeyVerify KeyState = "verify"
	// KeyRetired is withdrawn; the gateway drops it from the JWKS once
	// KeysInUse no longer lists it.
	KeyRetired KeyState = "retired"
)

// Valid reports whether st is one of the known states.
func (st KeyState) Valid() bool {
	switch st {
	case KeyNext, KeyActive, KeyVerify, KeyRetired:
		return true
	}
	return false
}

// SigningKey is an Ed25519 key of the gateway's key set.
type SigningKey struct {
	KID       string
	Seed      []byte            // the private key's 32-byte seed (RFC 8032)
	Public    ed25519.PublicKey // must match Seed
	State     KeyState
	CreatedAt time.Time
	RetiredAt time.Time // zero unless retired
	// ActivateAt is when a next key becomes active; zero for the others.
	ActivateAt time.Time
}

// PrivateKey expands the seed into the key crypto/ed25519 signs with.
func (k SigningKey) PrivateKey() ed25519.PrivateKey { return ed25519.NewKeyFromSeed(k.Seed) }

func (k SigningKey) validate() error {
	switch {
	case k.KID == "":
		return errors.New("empty kid")
	case len(k.Seed) != ed25519.SeedSize:
		return fmt.Errorf("seed is %d bytes, want %d", len(k.Seed), ed25519.SeedSize)
	case !bytes.Equal(k.PrivateKey().Public().(ed25519.PublicKey), k.Public):
		return errors.New("public key does not match the seed")
	case !k.State.Valid():
		return fmt.Errorf("unknown state %q", k.State)
	case k.State == KeyNext && k.ActivateAt.IsZero():
		return errors.New("a next key needs its activation time")
	}
	return nil
}

// InsertKey stores a new key, encrypting its seed when the store has a key
// file. A zero CreatedAt is set to now. Inserting an active key while
// another is active fails with ErrActiveKeyExists: insert it as verify and
// ActivateKey it. A next key is stored as a verify key with its activation
// time; inserting one while another is next fails with ErrKeyState.
func (s *Store) InsertKey(ctx context.Context, k SigningKey) error {
	if err := k.validate(); err != nil {
		return fmt.Errorf("insert signing key %s: %w: %w", k.KID, ErrInvalid, err)
	}
	if k.CreatedAt.IsZero() {
		k.CreatedAt = s.now()
	}
	private, encrypted := k.Seed, 0
	if s.sealer != nil {
		var err error
		if private, err = s.sealer.seal(k.KID, k.Seed); err != nil {
			return fmt.Errorf("insert signing key %s: %w", k.KID, err)
		}
		encrypted = 1
	}
	var retiredAt any // NULL unless retired
	if k.State == KeyRetired {
		retiredAt = dbTime(k.CreatedAt)
		if !k.RetiredAt.IsZero() {
			retiredAt = dbTime(k.RetiredAt)
		}
	}
	state := k.State
	if state == KeyNext {
		state = KeyVerify
	}
	err := s.writeTx(ctx, func(tx *txn) error {
		if k.State == KeyNext {
			// Two gateways inserting a next key at once: the second waits
			// here, then finds the first's.
			if err := lockKeySet(ctx, tx); err != nil {
				return err
			}
			var next string
			err := tx.QueryRowContext(ctx, "SELECT kid FROM key_activations").Scan(&next)
			if err == nil {
				return fmt.Errorf("%w: key %s is already next", ErrKeyState, next)
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		// Checked first for a clear error; the partial unique index
		// signing_keys_one_active is the backstop.
		if k.State == KeyActive {
			if err := lockKeySet(ctx, tx); err != nil {
				return err
			}
			var active string
			err := tx.QueryRowContext(ctx, "SELECT kid FROM signing_keys WHERE state = ?", KeyActive).Scan(&active)
			if err == nil {
				return fmt.Errorf("%w: %s", ErrActiveKeyExists, active)
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		_, err := tx.ExecContext(ctx,
			`INSERT INTO signing_keys (kid, private_key, public_key, encrypted, state, created_at, retired_at)
			 VALUES (?, ?, ?, ?, ?, ?, ?)`,
			k.KID, private, []byte(k.Public), encrypted, state, dbTime(k.CreatedAt), retiredAt)
		if s.dialect.isUniqueViolation(err) {
			return fmt.Errorf("%w: kid already exists", ErrInvalid)
		}
		if err != nil {
			return err
		}
		if k.State == KeyNext {
			if _, err := tx.ExecContext(ctx, "INSERT INTO key_activations (kid, activate_at) VALUES (?, ?)",
				k.KID, dbTime(k.ActivateAt)); err != nil {
				return err
			}
		}
		return tx.d.notify(ctx, tx, ChannelKeys, []string{k.KID})
	})
	if err != nil {
		return fmt.Errorf("insert signing key %s: %w", k.KID, err)
	}
	return nil
}

// keySelect reads every column scanKey needs; a next key is a verify key
// with an activation.
const keySelect = `SELECT k.kid, k.private_key, k.public_key, k.encrypted, k.state, k.created_at, k.retired_at, a.activate_at
	FROM signing_keys k LEFT JOIN key_activations a ON a.kid = k.kid`

func (s *Store) scanKey(r rowScanner) (SigningKey, error) {
	var k SigningKey
	var private, public []byte
	var encrypted, createdAt int64
	var retiredAt, activateAt sql.NullInt64
	if err := r.Scan(&k.KID, &private, &public, &encrypted, &k.State, &createdAt, &retiredAt, &activateAt); err != nil {
		return SigningKey{}, err
	}
	k.Public = ed25519.PublicKey(public)
	k.CreatedAt, k.RetiredAt = goTime(createdAt), goTime(retiredAt.Int64)
	if activateAt.Valid && k.State == KeyVerify {
		k.State, k.ActivateAt = KeyNext, goTime(activateAt.Int64)
	}
	switch {
	case encrypted == 0:
		k.Seed = private
	case s.sealer == nil:
		return SigningKey{}, fmt.Errorf("%w: signing key %s is encrypted and no key file was given",
			ErrWrongKeyFile, k.KID)
	default:
		seed, err := s.sealer.open(k.KID, private)
		if err != nil {
			return SigningKey{}, err
		}
		k.Seed = seed
	}
	if len(k.Seed) != ed25519.SeedSize ||
		!bytes.Equal(k.PrivateKey().Public().(ed25519.PublicKey), k.Public) {
		return SigningKey{}, fmt.Errorf("%w: signing key %s: stored seed does not match its public key",
			ErrNotDatabase, k.KID)
	}
	return k, nil
}

// ListKeys returns every key, seeds decrypted, oldest first.
func (s *Store) ListKeys(ctx context.Context) ([]SigningKey, error) {
	rows, err := s.reader.QueryContext(ctx, keySelect+" ORDER BY k.created_at, k.kid")
	if err != nil {
		return nil, fmt.Errorf("list signing keys: %w", err)
	}
	defer rows.Close()
	var out []SigningKey
	for rows.Next() {
		k, err := s.scanKey(rows)
		if err != nil {
			return nil, fmt.Errorf("list signing keys: %w", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list signing keys: %w", err)
	}
	return out, nil
}

// ActiveKey returns the key that signs new tokens, or ErrNoActiveKey.
func (s *Store) ActiveKey(ctx context.Context) (SigningKey, error) {
	k, err := s.scanKey(s.reader.QueryRowContext(ctx, keySelect+" WHERE k.state = ?", KeyActive))
	if errors.Is(err, sql.ErrNoRows) {
		return SigningKey{}, fmt.Errorf("active signing key: %w", ErrNoActiveKey)
	}
	if err != nil {
		return SigningKey{}, fmt.Errorf("active signing key: %w", err)
	}
	return k, nil
}

// GetKey returns one key, seed decrypted, or ErrNotFound.
func (s *Store) GetKey(ctx context.Context, kid string) (SigningKey, error) {
	k, err := s.scanKey(s.reader.QueryRowContext(ctx, keySelect+" WHERE k.kid = ?", kid))
	if errors.Is(err, sql.ErrNoRows) {
		return SigningKey{}, fmt.Errorf("signing key %s: %w", kid, ErrNotFound)
	}
	if err != nil {
		return SigningKey{}, fmt.Errorf("signing key %s: %w", kid, err)
	}
	return k, nil
}

// KeysDueForActivation returns the next keys whose activation time is at
// or before now, the earliest first.
func (s *Store) KeysDueForActivation(ctx context.Context, now time.Time) ([]string, error) {
	kids, err := s.queryKIDs(ctx,
		"SELECT kid FROM key_activations WHERE activate_at <= ? ORDER BY activate_at, kid", dbTime(now))
	if err != nil {
		return nil, fmt.Errorf("signing keys due for activation at %v: %w", now, err)
	}
	return kids, nil
}

// queryKIDs runs a query whose one column is a kid.
func (s *Store) queryKIDs(ctx context.Context, query string, args ...any) ([]string, error) {
	rows, err := s.reader.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var kids []string
	for rows.Next() {
		var kid string
		if err := rows.Scan(&kid); err != nil {
			return nil, err
		}
		kids = append(kids, kid)
	}
	return kids, rows.Err()
}

// ActivateKey makes kid the active key and demotes the previously active
// one to verify, in one transaction: there is never zero or two active keys.
// Activating a next key ends its wait. A retired key cannot be activated
// again (ErrKeyState).
func (s *Store) ActivateKey(ctx context.Context, kid string) error {
	err := s.writeTx(ctx, func(tx *txn) error {
		if err := lockKeySet(ctx, tx); err != nil {
			return err
		}
		var state KeyState
		err := tx.QueryRowContext(ctx, "SELECT state FROM signing_keys WHERE kid = ?", kid).Scan(&state)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		switch state {
		case KeyActive:
			return nil
		case KeyRetired:
			return fmt.Errorf("%w: key is retired", ErrKeyState)
		}
		// Demote first: the partial unique index allows one active row.
		if _, err := tx.ExecContext(ctx,
			"UPDATE signing_keys SET state = ? WHERE state = ?", KeyVerify, KeyActive); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM key_activations WHERE kid = ?", kid); err != nil {
			return err
		}
		if _, err = tx.ExecContext(ctx, "UPDATE signing_keys SET state = ? WHERE kid = ?", KeyActive, kid); err != nil {
			return err
		}
		return tx.d.notify(ctx, tx, ChannelKeys, []string{kid})
	})
	if err != nil {
		return fmt.Errorf("activate signing key %s: %w", kid, err)
	}
	s.log.Info("activated signing key", zap.String("kid", kid))
	return nil
}

// RetireKey retires a verify key (a next key too, which cancels its
// activation). The active key cannot be retired (ErrKeyState): activate its
// successor first. Retiring a retired key is a no-op.
func (s *Store) RetireKey(ctx context.Context, kid string) error {
	err := s.writeTx(ctx, func(tx *txn) error {
		if err := lockKeySet(ctx, tx); err != nil {
			return err
		}
		var state KeyState
		err := tx.QueryRowContext(ctx, "SELECT state FROM signing_keys WHERE kid = ?", kid).Scan(&state)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		switch state {
		case KeyRetired:
			return nil
		case KeyActive:
			return fmt.Errorf("%w: key is active; activate another key first", ErrKeyState)
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM key_activations WHERE kid = ?", kid); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx,
			"UPDATE signing_keys SET state = ?, retired_at = ? WHERE kid = ?",
			KeyRetired, dbTime(s.now()), kid)
		if err != nil {
			return err
		}
		return tx.d.notify(ctx, tx, ChannelKeys, []string{kid})
	})
	if err != nil {
		return fmt.Errorf("retire signing key %s: %w", kid, err)
	}
	s.log.Info("retired signing key", zap.String("kid", kid))
	return nil
}

// lockKeySet serialises changes to the key set until commit, so that two
// gateways changing key states at once run one after the other: neither
// can leave zero or two active (or next) keys, nor retire a key the other
// just activated. SQLite's write transaction holds the whole database
// already; Postgres takes an advisory lock, which also covers a key set
// still empty.
func lockKeySet(ctx context.Context, tx *txn) error {
	if err := tx.d.lockKeySet(ctx, tx); err != nil {
		return fmt.Errorf("lock signing keys: %w", err)
	}
	return nil
}

// KeysInUse returns the kids that signed a generation still unexpired at
// now, so the gateway keeps them in the JWKS until their last token expires.
func (s *Store) KeysInUse(ctx context.Context, now time.Time) ([]string, error) {
	kids, err := s.queryKIDs(ctx,
		`SELECT k.kid FROM signing_keys k WHERE EXISTS
		 (SELECT 1 FROM generations g WHERE g.kid = k.kid AND g.expires_at > ?)
		 ORDER BY k.kid`, dbTime(now))
	if err != nil {
		return nil, fmt.Errorf("signing keys in use at %v: %w", now, err)
	}
	return kids, nil
}

// checkKeysDecrypt fails Open early, with the key file named, when the
// stored keys cannot be decrypted, rather than at the first mint.
func (s *Store) checkKeysDecrypt(ctx context.Context) error {
	if _, err := s.ListKeys(ctx); err != nil {
		return err
	}
	if s.sealer == nil {
		return nil
	}
	var clear int
	if err := s.reader.QueryRowContext(ctx,
		"SELECT count(*) FROM signing_keys WHERE encrypted = 0").Scan(&clear); err != nil {
		return fmt.Errorf("count unencrypted signing keys: %w", err)
	}
	if clear > 0 {
		s.log.Warn("signing keys stored before the key file was configured stay unencrypted until rotated out",
			zap.Int("keys", clear))
	}
	return nil
}
