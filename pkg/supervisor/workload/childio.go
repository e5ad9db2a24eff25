package workload

import (
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// childIO is the parent's side of the pipes between a child and the
// caller's readers and writers that are not *os.File (see the package doc).
type childIO struct {
	childEnds []*os.File // the child's ends, closed in the parent once it runs
	stdin     *os.File   // write end of the stdin pipe, or nil
	stdinSrc  io.Reader
	outputs   []output
	copied    chan struct{} // one value per finished output copy
}

type output struct {
	r   *os.File // read end of a stdout or stderr pipe
	dst io.Writer
}

// pipeStdio replaces cmd's non-file streams by pipe ends, as cmd.Start would,
// but with pipes this package owns, since cmd.Wait is never called.
func pipeStdio(cmd *exec.Cmd) (*childIO, error) {
	c := &childIO{}
	if src := cmd.Stdin; src != nil && !isFile(src) {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		c.childEnds = append(c.childEnds, r)
		c.stdin, c.stdinSrc, cmd.Stdin = w, src, r
	}
	stdout, stderr := cmd.Stdout, cmd.Stderr
	if stdout != nil && !isFile(stdout) {
		w, err := c.pipeOutput(stdout)
		if err != nil {
			c.closeAll()
			return nil, err
		}
		cmd.Stdout = w
		// One writer for both streams gets one pipe, as with os/exec, so
		// that it is never written to concurrently.
		if sameWriter(stdout, stderr) {
			cmd.Stderr = w
		}
	}
	if stderr != nil && !isFile(stderr) && !sameWriter(stdout, stderr) {
		w, err := c.pipeOutput(stderr)
		if err != nil {
			c.closeAll()
			return nil, err
		}
		cmd.Stderr = w
	}
	c.copied = make(chan struct{}, len(c.outputs))
	return c, nil
}

func (c *childIO) pipeOutput(dst io.Writer) (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	c.childEnds = append(c.childEnds, w)
	c.outputs = append(c.outputs, output{r: r, dst: dst})
	return w, nil
}

// started closes the parent's copies of the child's ends, so that the
// output pipes reach end of file when the child and its descendants are
// gone, and starts the copies, tracked by wg.
func (c *childIO) started(wg *sync.WaitGroup) {
	for _, f := range c.childEnds {
		f.Close()
	}
	c.childEnds = nil
	if c.stdin != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			io.Copy(c.stdin, c.stdinSrc) //nolint:errcheck // the child may stop reading; that is its business
			c.stdin.Close()
		}()
	}
	for _, o := range c.outputs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			io.Copy(o.dst, o.r) //nolint:errcheck // ends at end of file, or when drain closes o.r
			c.copied <- struct{}{}
		}()
	}
}

// drain waits until every output copy reached end of file, or until limit
// has passed, then closes the parent's pipe ends.
func (c *childIO) drain(limit time.Duration) {
	timer := time.NewTimer(limit)
	defer timer.Stop()
wait:
	for range c.outputs {
		select {
		case <-c.copied:
		case <-timer.C:
			break wait
		}
	}
	c.closeAll()
}

// closeAll closes every pipe end still open in the parent; a copy blocked
// reading or writing one of them returns.
func (c *childIO) closeAll() {
	for _, f := range c.childEnds {
		f.Close()
	}
	if c.stdin != nil {
		c.stdin.Close()
	}
	for _, o := range c.outputs {
		o.r.Close()
	}
}

func isFile(v any) bool {
	_, ok := v.(*os.File)
	return ok
}

// sameWriter reports whether a and b are the same writer; values of
// uncomparable types are never the same.
func sameWriter(a, b io.Writer) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a == b
}
