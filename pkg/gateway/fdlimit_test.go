package gateway

import (
	"errors"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"
)

func TestFDCheckWarnsOnceEachTimeTheListenersOutgrowTheLimit(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	c := newFDCheck(zap.New(core))
	limit := uint64(1024)
	c.limit = func() (uint64, error) { return limit, nil }

	c.check(384) // 384×2 + the reserve of 256 = 1024: still enough
	if got := warnings(logs); len(got) != 0 {
		t.Fatalf("warnings at the limit: %q", got)
	}
	c.check(385)
	c.check(500) // said once
	got := warnings(logs)
	if len(got) != 1 || !strings.Contains(got[0], "LimitNOFILE") || !strings.Contains(got[0], "65536") {
		t.Fatalf("warnings past the limit = %q, want one naming LimitNOFILE and a limit to raise it to", got)
	}
	if f := logs.FilterLevelExact(zapcore.WarnLevel).All()[0].ContextMap(); f["needed"] != uint64(1026) || f["limit"] != limit {
		t.Errorf("warning fields = %v, want needed 1026 and the limit", f)
	}

	limit = 1 << 20 // the operator raised it (prlimit), or sandboxes went away
	c.check(500)
	if n := logs.FilterMessageSnippet("enough for its sandboxes again").Len(); n != 1 {
		t.Errorf("%d notes that the limit is enough again, want 1", n)
	}
	limit = 1024
	c.check(500)
	if got := warnings(logs); len(got) != 2 {
		t.Errorf("warnings after the limit fell short again = %d, want 2", len(got))
	}
}

func TestFDCheckSaysOnceThatItCannotReadTheLimit(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	c := newFDCheck(zap.New(core))
	c.limit = func() (uint64, error) { return 0, errors.New("no rlimit here") }
	c.check(10)
	c.check(20)
	if n := logs.FilterMessageSnippet("cannot read the gateway's open-file limit").Len(); n != 1 || len(warnings(logs)) != 0 {
		t.Errorf("%d notes and %d warnings for an unreadable limit, want 1 note and no warning", n, len(warnings(logs)))
	}
}

// The check reads the soft limit, the one the kernel enforces, not the
// hard one it could be raised to.
func TestOpenFileLimitIsTheProcessSoftLimit(t *testing.T) {
	var was unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &was); err != nil {
		t.Fatal(err)
	}
	if was.Cur < 1000 {
		t.Fatalf("RLIMIT_NOFILE %+v: too low to lower for this test", was)
	}
	lowered := unix.Rlimit{Cur: was.Cur - 1, Max: was.Max}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lowered); err != nil {
		t.Fatal(err)
	}
	defer unix.Setrlimit(unix.RLIMIT_NOFILE, &was)
	if got, err := openFileLimit(); err != nil || got != lowered.Cur {
		t.Fatalf("openFileLimit = %d, %v; want the soft limit %d", got, err, lowered.Cur)
	}
}
