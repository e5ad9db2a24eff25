package source

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sandkey/sandkey/pkg/auth/tokendir"
)

// BenchmarkRawInotifyLatency is BenchmarkPropagation/fsnotify's floor,
// measured the same way on the same directory layout and writer: a bare
// inotify watch on the directory (golang.org/x/sys/unix, no fsnotify, no
// verification) and a plain read of token on every event. The report
// divides the Source's latency by this one: what parsing, verifying and
// publishing a token costs over the kernel's notification and one read.
func BenchmarkRawInotifyLatency(b *testing.B) {
	f := newFixture(b)
	f.write(f.mint(100).Raw())
	r, err := newRawInotifyReader(f.dir)
	if err != nil {
		b.Fatal(err)
	}
	defer r.close()
	propagation(b, f, 0, func(_ uint64, raw string) {
		for got := range r.updates {
			if string(got) == raw {
				return
			}
		}
		b.Fatal("raw inotify reader stopped")
	})
}

// rawInotifyReader re-reads dir/token on every inotify event of dir and
// sends each new content on updates (size one, newest wins).
type rawInotifyReader struct {
	file    *os.File
	updates chan []byte
	wg      sync.WaitGroup
}

func newRawInotifyReader(dir string) (*rawInotifyReader, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	// The events a Writer.Write makes in the directory: the ..data swap
	// and the cleanup of older timestamped directories.
	const mask = unix.IN_MOVED_TO | unix.IN_CREATE | unix.IN_DELETE | unix.IN_CLOSE_WRITE
	if _, err := unix.InotifyAddWatch(fd, dir, mask); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Non-blocking, so os.File uses the runtime poller and close unblocks
	// a pending read.
	r := &rawInotifyReader{file: os.NewFile(uintptr(fd), "inotify"), updates: make(chan []byte, 1)}
	token := filepath.Join(dir, tokendir.TokenFile)
	last, _ := os.ReadFile(token)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(r.updates)
		buf := make([]byte, 64<<10)
		for {
			if _, err := r.file.Read(buf); err != nil {
				return // closed (os.ErrClosed), or the watch is unusable
			}
			data, err := os.ReadFile(token)
			if err != nil || bytes.Equal(data, last) {
				continue // mid-swap, or an event of the cleanup
			}
			last = data
			select {
			case <-r.updates:
			default:
			}
			r.updates <- data
		}
	}()
	return r, nil
}

func (r *rawInotifyReader) close() {
	r.file.Close()
	r.wg.Wait()
}
