package tokendir

import (
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkWrite writes a new token (about 1 KiB, like a real one) and the
// same JWKS each time, as a rotation does, on a tmpfs as the gateway's
// token root is.
func BenchmarkWrite(b *testing.B) {
	dir, err := os.MkdirTemp("/dev/shm", "sk-write")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := RemoveDir(filepath.Join(dir, "auth")); err != nil {
			b.Error(err)
		}
		os.Remove(dir)
	})
	w, err := NewWriter(filepath.Join(dir, "auth"))
	if err != nil {
		b.Fatal(err)
	}
	jwks := []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k1"}]}`)
	seq := 1000
	for b.Loop() {
		seq++
		if err := w.Write(map[string][]byte{TokenFile: stamp("bench", seq), JWKSFile: jwks}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadToken(b *testing.B) {
	for _, op := range openers {
		b.Run(op.name, func(b *testing.B) {
			w := newTestWriter(b)
			if err := w.Write(payload(string(stamp("bench", 1000)))); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := readFile(w.Dir(), TokenFile, op.open); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
