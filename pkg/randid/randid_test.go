package randid

import (
	"encoding/hex"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNewIsLowerHexOfNBytesAndNeverRepeats(t *testing.T) {
	for _, n := range []int{0, 8, 16, 32} {
		seen := make(map[string]bool)
		for range 1000 {
			id := New(n)
			b, err := hex.DecodeString(id)
			if err != nil || len(b) != n || hex.EncodeToString(b) != id {
				t.Fatalf("New(%d) = %q: want %d bytes in lower-case hex", n, id, n)
			}
			if n >= 8 && seen[id] {
				t.Fatalf("New(%d) returned %q twice in 1000 calls", n, id)
			}
			seen[id] = true
		}
	}
}
