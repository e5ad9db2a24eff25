package store

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
)

// keyFileSize is the size of the AES-256 key in a key file.
const keyFileSize = 32

// maxKeyFileRead bounds the read of a key file; a valid one is at most 65
// bytes (64 hex digits and a newline).
const maxKeyFileRead = 128

// sealer encrypts signing key seeds at rest with AES-256-GCM. A nil *sealer
// stores them in the clear.
type sealer struct {
	path string
	aead cipher.AEAD
}

// loadKeyFile reads a key file: exactly 32 raw bytes (head -c 32
// /dev/urandom), or 64 hex digits with an optional trailing newline
// (openssl rand -hex 32). Like the database, it must be 0600 or stricter.
func loadKeyFile(path string) (*sealer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: stat %s: %w", ErrKeyFile, path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s: not a regular file", ErrKeyFile, path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: key file %s is accessible by group or others (mode %04o); run: chmod 600 %s",
			ErrInsecurePermissions, path, fi.Mode().Perm(), path)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxKeyFileRead))
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", ErrKeyFile, path, err)
	}
	key, err := parseKeyFile(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w; create one with: head -c 32 /dev/urandom > %s",
			ErrKeyFile, path, err, path)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return &sealer{path: path, aead: aead}, nil
}

func parseKeyFile(raw []byte) ([]byte, error) {
	if len(raw) == keyFileSize {
		return raw, nil
	}
	text := bytes.TrimSuffix(raw, []byte("\n"))
	if len(text) == 2*keyFileSize {
		key, err := hex.DecodeString(string(text))
		if err == nil {
			return key, nil
		}
	}
	return nil, fmt.Errorf("want %d raw bytes or %d hex digits, got %d bytes",
		keyFileSize, 2*keyFileSize, len(raw))
}

// seal encrypts a seed; the kid is authenticated too, so a ciphertext copied
// to another key's row does not decrypt.
func (s *sealer) seal(kid string, seed []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(seed)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("encrypt signing key %s: %w", kid, err)
	}
	return s.aead.Seal(nonce, nonce, seed, sealAAD(kid)), nil
}

// open decrypts what seal produced.
func (s *sealer) open(kid string, sealed []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n+s.aead.Overhead() {
		return nil, fmt.Errorf("%w: signing key %s: encrypted value is %d bytes, too short",
			ErrWrongKeyFile, kid, len(sealed))
	}
	seed, err := s.aead.Open(nil, sealed[:n], sealed[n:], sealAAD(kid))
	if err != nil {
		return nil, fmt.Errorf("%w: signing key %s does not decrypt with key file %s (wrong key file?)",
			ErrWrongKeyFile, kid, s.path)
	}
	return seed, nil
}

func sealAAD(kid string) []byte { return []byte("sandkey signing key " + kid) }
