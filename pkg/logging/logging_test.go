package logging

import (
	"strings"
	"testing"

	"go.uber.org/zap/zapcore"
)

func TestNewSetsTheLevel(t *testing.T) {
	for _, format := range []string{"json", "console"} {
		log, err := New("warn", format)
		if err != nil {
			t.Fatalf("New(warn, %s): %v", format, err)
		}
		if log.Core().Enabled(zapcore.InfoLevel) || !log.Core().Enabled(zapcore.WarnLevel) {
			t.Errorf("format %s: want warn and above enabled, info not", format)
		}
	}
}

func TestNewRefusesBadFlagsNamingThem(t *testing.T) {
	for _, tc := range []struct{ level, format, flag string }{
		{"loud", "json", "--log-level"},
		{"info", "xml", "--log-format"},
	} {
		_, err := New(tc.level, tc.format)
		if err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("New(%q, %q) = %v, want an error naming %s", tc.level, tc.format, err, tc.flag)
		}
	}
}
