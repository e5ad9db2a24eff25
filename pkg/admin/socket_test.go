package admin

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestListenUnixCreatesSocket0600WhateverTheUmask(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "admin.sock")
	l, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode = %s, want a socket with 0600", fi.Mode())
	}
	if got := l.Addr().String(); got != path {
		t.Errorf("Addr() = %q, want %q", got, path)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %v, want only the socket", entries)
	}
	accepted := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial the socket: %v", err)
	}
	c.Close()
	if err := <-accepted; err != nil {
		t.Fatalf("accept: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket still there after Close: %v", err)
	}
}

func TestListenUnixRefusesToReplaceANonSocket(t *testing.T) {
	tests := []struct {
		name   string
		create func(path string) error
	}{
		{"regular file", func(p string) error { return os.WriteFile(p, []byte("keep me"), 0o600) }},
		{"directory", func(p string) error { return os.Mkdir(p, 0o700) }},
		{"symlink", func(p string) error { return os.Symlink("/dev/null", p) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "admin.sock")
			if err := tt.create(path); err != nil {
				t.Fatal(err)
			}
			before, _ := os.Lstat(path)
			l, err := ListenUnix(path)
			if err == nil {
				l.Close()
				t.Fatal("ListenUnix replaced a non-socket file")
			}
			if !strings.Contains(err.Error(), "not a socket") {
				t.Errorf("error %q does not say the file is not a socket", err)
			}
			after, err := os.Lstat(path)
			if err != nil || !os.SameFile(before, after) {
				t.Errorf("the file in the way was changed: %v", err)
			}
		})
	}
}

func TestListenUnixReplacesSocketOfAGoneGateway(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close() // the socket file stays, as after a crash
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale socket missing: %v", err)
	}
	l, err := ListenUnix(path)
	if err != nil {
		t.Fatalf("ListenUnix over a stale socket: %v", err)
	}
	defer l.Close()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial the new socket: %v", err)
	}
	c.Close()
}

func TestListenUnixRefusesASocketAGatewayServesOn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	first, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	second, err := ListenUnix(path)
	if err == nil {
		second.Close()
		t.Fatal("a second ListenUnix took over a live socket")
	}
	if !strings.Contains(err.Error(), "another gateway") {
		t.Errorf("error %q does not name the cause", err)
	}
}

func TestListenerCloseLeavesASuccessorsSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	first, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil { // as an operator cleaning up would
		t.Fatal(err)
	}
	second, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	first.Close()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("the first listener's Close removed its successor's socket: %v", err)
	}
	c.Close()
}

func TestListenUnixExplainsAPathTooLongForASocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 90))
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	l, err := ListenUnix(filepath.Join(dir, "admin.sock"))
	if err == nil {
		l.Close()
		t.Fatal("ListenUnix bound a path longer than a unix socket allows")
	}
	if !strings.Contains(err.Error(), "too long") {
		t.Errorf("error %q does not say the path is too long", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("ListenUnix left %v behind", entries)
	}
}
