package supervisor

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/sandkey/sandkey/pkg/session"
)

// A command that cannot be started exits as in a shell: 127 when it is
// not there, 126 when it is but cannot run. These fail before the reaper
// is needed.
func TestExecOfACommandThatCannotStartExitsLikeAShell(t *testing.T) {
	notExecutable := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notExecutable, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		argv0 string
		want  int
	}{
		{"/no/such/binary", session.ExitNotFound},
		{"sandkey-no-such-command", session.ExitNotFound},
		{notExecutable, session.ExitCannotExecute},
		{t.TempDir(), session.ExitCannotExecute},
	}
	for _, tt := range tests {
		res := reaperExec{}.Run(t.Context(), session.ExecCommand{Argv: []string{tt.argv0}}, io.Discard, io.Discard)
		if res.ExitCode != tt.want || res.Error == "" {
			t.Errorf("exec %s: exit %d (%q), want %d with the cause", tt.argv0, res.ExitCode, res.Error, tt.want)
		}
	}
}
