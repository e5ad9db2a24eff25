package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/driver/statedir"
)

var _ driver.Logger = (*Driver)(nil)

// Logs implements driver.Logger: the supervisor's and the workload's output, appended to <StateDir>/sandbox.log over every start.
func (d *Driver) Logs(ctx context.Context, sandboxID string, follow bool) (io.ReadCloser, error) {
	if err := d.checkOpen(); err != nil {
		return nil, err
	}
	if err := statedir.CheckID(sandboxID); err != nil {
		return nil, fmt.Errorf("logs of sandbox %q: %w", sandboxID, err)
	}
	dir, err := d.index.Lookup(sandboxID)
	if errors.Is(err, statedir.ErrNoState) {
		return nil, fmt.Errorf("logs of sandbox %s: %w", sandboxID, driver.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return statedir.OpenLog(ctx, filepath.Join(dir, logFile), follow, statedir.LogPoll)
}
