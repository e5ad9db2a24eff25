package statedir

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestOpenLogWithoutFollowEndsAtTheCurrentEnd(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sandbox.log")
	for _, tc := range []struct {
		name, content string
		create        bool
	}{
		{name: "missing file reads empty"},
		{name: "whole file", content: "line one\nline two\n", create: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.create {
				if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			r, err := OpenLog(context.Background(), path, false, time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got, err := io.ReadAll(r)
			if err != nil || string(got) != tc.content {
				t.Fatalf("read %q, %v; want %q", got, err, tc.content)
			}
		})
	}
}

func TestOpenLogFollowsAppendsAndAReplacedFileUntilCancelled(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "console.log")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := OpenLog(ctx, path, true, time.Millisecond) // the file appears later
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	lines := make(chan string)
	readErr := make(chan error, 1)
	go func() {
		var got strings.Builder
		b := make([]byte, 64)
		for {
			n, err := r.Read(b)
			got.Write(b[:n])
			if n > 0 {
				lines <- got.String()
			}
			if err != nil {
				readErr <- err
				return
			}
		}
	}()
	await := func(want string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case got := <-lines:
				if got == want {
					return
				}
			case <-deadline:
				t.Fatalf("never read %q", want)
			}
		}
	}
	appendTo := func(s string) {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(s)
		f.Close()
	}
	appendTo("boot\n")
	await("boot\n")
	appendTo("more\n")
	await("boot\nmore\n")
	// A new start renames the old console away and writes a new one.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendTo("second boot\n")
	await("boot\nmore\nsecond boot\n")
	cancel()
	if err := <-readErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("read after cancel: %v, want context.Canceled", err)
	}
}
