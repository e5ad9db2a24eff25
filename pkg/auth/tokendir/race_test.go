package tokendir

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A stamped token names its writer and sequence number, carries padding of
// varying length (so a torn read shows), and ends with a checksum keyed by
// the test's secret (so a token from anywhere else shows).
const stampSecret = "tokendir-race-test"

// readPause separates a reader's reads; see readUntil.
const readPause = 100 * time.Microsecond

func stamp(writer string, seq int) []byte {
	body := fmt.Sprintf("%s.%d.%s", writer, seq, strings.Repeat("p", seq%997))
	sum := sha256.Sum256([]byte(stampSecret + body))
	return []byte(body + "." + hex.EncodeToString(sum[:]))
}

func unstamp(data []byte) (writer string, seq int, err error) {
	s := string(data)
	i := strings.LastIndexByte(s, '.')
	if i < 0 {
		return "", 0, fmt.Errorf("no checksum in %.60q", s)
	}
	body, sum := s[:i], s[i+1:]
	want := sha256.Sum256([]byte(stampSecret + body))
	if sum != hex.EncodeToString(want[:]) {
		return "", 0, fmt.Errorf("bad checksum in %.60q (len %d)", s, len(s))
	}
	parts := strings.SplitN(body, ".", 3)
	seq, err = strconv.Atoi(parts[1])
	return parts[0], seq, err
}

func writeStamped(w *Writer, writer string, seq int) error {
	token := stamp(writer, seq)
	return w.Write(map[string][]byte{TokenFile: token, JWKSFile: token})
}

// readUntil reads the token and the JWKS of dir until stop is closed,
// checking every read, and returns how many reads it made. Sequence numbers
// never go down per writer: ..data only ever moves to a newer write.
// A short pause between reads keeps readers from starving the writer on a
// small machine while still landing reads all over each write.
func readUntil(t *testing.T, dir string, stop <-chan struct{}) int {
	last := map[string]int{}
	reads := 0
	for {
		select {
		case <-stop:
			return reads
		case <-time.After(readPause):
		}
		for _, name := range []string{TokenFile, JWKSFile} {
			data, err := ReadFile(dir, name)
			if err != nil {
				t.Errorf("read %d: %v", reads, err)
				return reads
			}
			writer, seq, err := unstamp(data)
			if err != nil {
				t.Errorf("read %d of %s: %v", reads, name, err)
				return reads
			}
			if seq < last[writer] {
				t.Errorf("read %d of %s: writer %s seq %d after %d", reads, name, writer, seq, last[writer])
				return reads
			}
			last[writer] = seq
			reads++
		}
	}
}

func TestReadersNeverSeeTornMissingOrForeignTokenWhileRewritten(t *testing.T) {
	writes := 5000
	if testing.Short() {
		writes = 500
	}
	w := newTestWriter(t)
	if err := writeStamped(w, "w", 0); err != nil {
		t.Fatal(err)
	}
	// Another published directory: its tokens must never show up here.
	other := newTestWriter(t)

	stop := make(chan struct{})
	var readers sync.WaitGroup
	var reads atomic.Int64
	for range 3 {
		readers.Go(func() { reads.Add(int64(readUntil(t, w.Dir(), stop))) })
	}
	for seq := 1; seq <= writes; seq++ {
		if err := writeStamped(w, "w", seq); err != nil {
			t.Fatal(err)
		}
		if seq%100 == 0 {
			if err := other.Write(map[string][]byte{TokenFile: []byte("foreign")}); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	readers.Wait()
	t.Logf("%d writes, %d reads", writes, reads.Load())

	checkLayout(t, w.Dir(), TokenFile, JWKSFile)
	data, err := ReadToken(w.Dir())
	if _, seq, _ := unstamp(data); err != nil || seq != writes {
		t.Errorf("last token seq %d (%v), want %d", seq, err, writes)
	}
}

func TestTwoWritersOnOneDirectoryKeepItsLayout(t *testing.T) {
	const writes = 300
	w1 := newTestWriter(t)
	w2, err := NewWriter(w1.Dir()) // as a second gateway process would
	if err != nil {
		t.Fatal(err)
	}
	if err := writeStamped(w1, "a", 0); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var readers, writers sync.WaitGroup
	readers.Go(func() { readUntil(t, w1.Dir(), stop) })
	for _, wr := range []struct {
		name string
		w    *Writer
	}{{"a", w1}, {"b", w2}} {
		writers.Go(func() {
			for seq := 1; seq <= writes; seq++ {
				if err := writeStamped(wr.w, wr.name, seq); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	writers.Wait()
	close(stop)
	readers.Wait()
	checkLayout(t, w1.Dir(), TokenFile, JWKSFile)
}

// helperDirEnv names the directory a child process writes into; see
// TestHelperProcessWriter.
const helperDirEnv = "TOKENDIR_TEST_HELPER_DIR"

func TestWritersInTwoProcessesKeepTheLayout(t *testing.T) {
	const writes = 300
	w := newTestWriter(t)
	if err := writeStamped(w, "parent", 0); err != nil {
		t.Fatal(err)
	}
	child := exec.Command(os.Args[0], "-test.run=^TestHelperProcessWriter$", "-test.count=1")
	child.Env = append(os.Environ(), helperDirEnv+"="+w.Dir(), "TOKENDIR_TEST_HELPER_WRITES="+strconv.Itoa(writes))
	child.Stderr = os.Stderr
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	// Write while the child writes: the child prints "started" first.
	buf := make([]byte, len("started\n"))
	if _, err := out.Read(buf); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Go(func() { readUntil(t, w.Dir(), stop) })
	for seq := 1; seq <= writes; seq++ {
		if err := writeStamped(w, "parent", seq); err != nil {
			t.Fatal(err)
		}
	}
	if err := child.Wait(); err != nil {
		t.Fatalf("child writer: %v", err)
	}
	close(stop)
	readers.Wait()
	checkLayout(t, w.Dir(), TokenFile, JWKSFile)
}

// TestHelperProcessWriter is the child of TestWritersInTwoProcessesKeepTheLayout;
// run alone it does nothing.
func TestHelperProcessWriter(t *testing.T) {
	dir := os.Getenv(helperDirEnv)
	if dir == "" {
		return
	}
	writes, _ := strconv.Atoi(os.Getenv("TOKENDIR_TEST_HELPER_WRITES"))
	w, err := NewWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("started")
	for seq := 1; seq <= writes; seq++ {
		if err := writeStamped(w, "child", seq); err != nil {
			t.Fatal(err)
		}
	}
}
