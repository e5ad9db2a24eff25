// Package exectest drives an interactive exec from a test, as an
// operator at a terminal would: type into it, read what it shows, and
// collect how it ended.
package exectest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sandkey/sandkey/pkg/session"
)

// ExecFunc runs one exec in a sandbox (a gateway's Exec, bound to the
// sandbox).
type ExecFunc func(ctx context.Context, req session.ExecRequest) (session.ExecResult, error)

// Terminal is an exec on a 24x80 terminal, its stdin streamed.
type Terminal struct {
	input chan session.ExecInput
	out   Buffer
	done  chan struct{} // closed once the exec has returned
	res   session.ExecResult
	err   error
}

// Start runs argv on a terminal through exec. The exec's goroutine ends
// when the exec does, at the latest when ctx ends.
func Start(ctx context.Context, exec ExecFunc, argv ...string) *Terminal {
	t := &Terminal{input: make(chan session.ExecInput), done: make(chan struct{})}
	go func() {
		defer close(t.done)
		t.res, t.err = exec(ctx, session.ExecRequest{Argv: argv, Input: t.input, StreamStdin: true, TTY: true,
			Window: session.WindowSize{Rows: 24, Cols: 80}, Stdout: &t.out, Stderr: &t.out})
	}()
	return t
}

// Type sends keys to the terminal; it fails when the exec has ended first.
func (t *Terminal) Type(keys string) error {
	select {
	case t.input <- session.ExecInput{Stdin: []byte(keys)}:
		return nil
	case <-t.done:
		return fmt.Errorf("exec ended before %q was typed: %+v, %v; output %q", keys, t.res, t.err, t.Output())
	}
}

// Output is all the terminal has shown so far.
func (t *Terminal) Output() string { return t.out.String() }

// Wait waits up to timeout for the exec to end and returns its result.
func (t *Terminal) Wait(timeout time.Duration) (session.ExecResult, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-t.done:
		return t.res, t.err
	case <-timer.C:
		return session.ExecResult{}, errors.New("exec did not end within " + timeout.String())
	}
}

// Buffer collects output (an exec's, a process's) while the test reads
// it: writes and String may run at once.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
