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
	case KeyActive, KeyVerify, KeyRetired:
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
	}
	return nil
}

// InsertKey stores a new key, encrypting its seed when the store has a key
// file. A zero CreatedAt is set to now. Inserting an active key while
// another is active fails with ErrActiveKeyExists: insert it as verify and
// ActivateKey it.
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
	err := s.writeTx(ctx, func(tx *txn) error {
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
			k.KID, private, []byte(k.Public), encrypted, k.State, dbTime(k.CreatedAt), retiredAt)
		if s.dialect.isUniqueViolation(err) {
			return fmt.Errorf("%w: kid already exists", ErrInvalid)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("insert signing key %s: %w", k.KID, err)
	}
	return nil
}

const keyColumns = "kid, private_key, public_key, encrypted, state, created_at, retired_at"

func (s *Store) scanKey(r rowScanner) (SigningKey, error) {
	var k SigningKey
	var private, public []byte
	var encrypted, createdAt int64
	var retiredAt sql.NullInt64
	if err := r.Scan(&k.KID, &private, &public, &encrypted, &k.State, &createdAt, &retiredAt); err != nil {
		return SigningKey{}, err
	}
	k.Public = ed25519.PublicKey(public)
	k.CreatedAt, k.RetiredAt = goTime(createdAt), goTime(retiredAt.Int64)
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
	rows, err := s.reader.QueryContext(ctx,
		"SELECT "+keyColumns+" FROM signing_keys ORDER BY created_at, kid")
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
	k, err := s.scanKey(s.reader.QueryRowContext(ctx,
		"SELECT "+keyColumns+" FROM signing_keys WHERE state = ?", KeyActive))
	if errors.Is(err, sql.ErrNoRows) {
		return SigningKey{}, fmt.Errorf("active signing key: %w", ErrNoActiveKey)
	}
	if err != nil {
		return SigningKey{}, fmt.Errorf("active signing key: %w", err)
	}
	return k, nil
}

// ActivateKey makes kid the active key and demotes the previously active
// one to verify, in one transaction: there is never zero or two active keys.
// A retired key cannot be activated again (ErrKeyState).
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
		_, err = tx.ExecContext(ctx, "UPDATE signing_keys SET state = ? WHERE kid = ?", KeyActive, kid)
		return err
	})
	if err != nil {
		return fmt.Errorf("activate signing key %s: %w", kid, err)
	}
	s.log.Info("activated signing key", zap.String("kid", kid))
	return nil
}

// RetireKey retires a verify key. The active key cannot be retired
// (ErrKeyState): activate its successor first. Retiring a retired key is a
// no-op.
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
		_, err = tx.ExecContext(ctx,
			"UPDATE signing_keys SET state = ?, retired_at = ? WHERE kid = ?",
			KeyRetired, dbTime(s.now()), kid)
		return err
	})
	if err != nil {
		return fmt.Errorf("retire signing key %s: %w", kid, err)
	}
	s.log.Info("retired signing key", zap.String("kid", kid))
	return nil
}

// lockKeySet locks every signing key row until commit (Postgres; SQLite's
// write transaction holds the whole database already), so that two gateways
// changing key states at once run one after the other: neither can leave
// zero or two active keys, nor retire a key the other just activated.
func lockKeySet(ctx context.Context, tx *txn) error {
	lock := tx.d.forUpdate()
	if lock == "" {
		return nil
	}
	rows, err := tx.QueryContext(ctx, "SELECT kid FROM signing_keys ORDER BY kid"+lock)
	if err != nil {
		return fmt.Errorf("lock signing keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("lock signing keys: %w", err)
	}
	return nil
}

// KeysInUse returns the kids that signed a generation still unexpired at
// now, so the gateway keeps them in the JWKS until their last token expires.
func (s *Store) KeysInUse(ctx context.Context, now time.Time) ([]string, error) {
	rows, err := s.reader.QueryContext(ctx,
		`SELECT k.kid FROM signing_keys k WHERE EXISTS
		 (SELECT 1 FROM generations g WHERE g.kid = k.kid AND g.expires_at > ?)
		 ORDER BY k.kid`, dbTime(now))
	if err != nil {
		return nil, fmt.Errorf("signing keys in use at %v: %w", now, err)
	}
	defer rows.Close()
	var kids []string
	for rows.Next() {
		var kid string
		if err := rows.Scan(&kid); err != nil {
			return nil, fmt.Errorf("signing keys in use at %v: %w", now, err)
		}
		kids = append(kids, kid)
	}
	if err := rows.Err(); err != nil {
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
