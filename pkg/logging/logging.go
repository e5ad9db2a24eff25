// Package logging builds the zap logger both programs log with, from
// their --log-level and --log-format flags, so the gateway and the
// supervisor read and write logs the same way.
package logging

import (
	"fmt"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a logger to stderr at level (debug, info, warn or error) in
// format (json or console). Its error names the flag to fix.
func New(level, format string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	var cfg zap.Config
	switch format {
	case "json":
		cfg = zap.NewProductionConfig()
	case "console":
		cfg = zap.NewDevelopmentConfig()
	default:
		return nil, fmt.Errorf("--log-format %q: want json or console", format)
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	// Errors here are about sandboxes and settings, not code paths.
	cfg.DisableStacktrace = true
	cfg.OutputPaths = []string{"stderr"}
	return cfg.Build()
}
