package tokendir

import (
	"testing"
)

func BenchmarkWrite(b *testing.B) {
	w := newTestWriter(b)
	files := payload(string(stamp("bench", 1000))) // about 1 KiB, like a real token
	for b.Loop() {
		if err := w.Write(files); err != nil {
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
