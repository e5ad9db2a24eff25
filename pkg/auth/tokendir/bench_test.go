package tokendir

import (
	"testing"
)

// BenchmarkWrite writes a new token (about 1 KiB, like a real one) and the
// same JWKS each time, as a rotation does.
func BenchmarkWrite(b *testing.B) {
	w := newTestWriter(b)
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
