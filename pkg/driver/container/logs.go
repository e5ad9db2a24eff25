package container

import (
	"context"
	"fmt"
	"io"

	ctr "github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/sandkey/sandkey/pkg/driver"
)

var _ driver.Logger = (*Driver)(nil)

// Logs implements driver.Logger: the engine's log of the sandbox's
// container (stdout and stderr of the supervisor and its workload, in the
// order the engine recorded them), followed until ctx ends or, as the
// engine does, until the container stops.
func (d *Driver) Logs(ctx context.Context, sandboxID string, follow bool) (io.ReadCloser, error) {
	if err := checkSandboxID(sandboxID); err != nil {
		return nil, fmt.Errorf("logs of sandbox %q: %w", sandboxID, err)
	}
	existing, found, err := d.inspect(ctx, sandboxID)
	switch {
	case err != nil:
		return nil, fmt.Errorf("logs of sandbox %s: %w", sandboxID, err)
	case !found:
		return nil, fmt.Errorf("logs of sandbox %s: %w", sandboxID, driver.ErrNotFound)
	}
	raw, err := d.client.ContainerLogs(ctx, existing.ID, ctr.LogsOptions{ShowStdout: true, ShowStderr: true, Follow: follow})
	if err != nil {
		return nil, fmt.Errorf("logs of sandbox %s: container %s: %w", sandboxID, short(existing.ID), err)
	}
	if existing.Config != nil && existing.Config.Tty {
		return raw, nil // a terminal's output is not multiplexed
	}
	return demux(raw), nil
}

// demuxed is an engine's multiplexed log stream as plain output; its
// Close stops the goroutine that splits it.
type demuxed struct {
	*io.PipeReader
	raw  io.ReadCloser
	done chan struct{}
}

func demux(raw io.ReadCloser) *demuxed {
	pr, pw := io.Pipe()
	m := &demuxed{PipeReader: pr, raw: raw, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		_, err := stdcopy.StdCopy(pw, pw, raw)
		pw.CloseWithError(err) // nil: the reader sees io.EOF
	}()
	return m
}

func (m *demuxed) Close() error {
	err := m.raw.Close()
	m.PipeReader.Close()
	<-m.done
	return err
}
