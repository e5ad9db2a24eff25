package kubetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"

	"github.com/sandkey/sandkey/pkg/testpki"
)

// writeServiceAccountKeys writes a fresh ECDSA P-256 key pair, the one the
// API server signs ServiceAccount tokens with (ES256), as PEM files.
func writeServiceAccountKeys(privPath, pubPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate ServiceAccount key: %w", err)
	}
	priv, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode ServiceAccount key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return fmt.Errorf("encode ServiceAccount public key: %w", err)
	}
	if err := writeFile(privPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: priv})); err != nil {
		return err
	}
	return writeFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
}

// writeFile writes a file only its owner can read: keys and tokens live
// in these files.
func writeFile(path string, data []byte) error { return testpki.WriteFile(path, data) }
