// Package scale runs sandkey at the scale of one busy host: hundreds of
// real supervisor processes on one real gateway binary (process driver),
// to pin behaviours that only show in numbers, such as recovery not
// depending on a per-user kernel limit.
package scale

import (
	"testing"

	"github.com/sandkey/sandkey/test/binaries"
)

func TestMain(m *testing.M) { binaries.RunTests(m) }
