package admin

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDialReportsNoGatewayAtAMissingOrDeadSocket(t *testing.T) {
	dir := t.TempDir()
	dead := filepath.Join(dir, "dead.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: dead, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	missing := filepath.Join(dir, "missing.sock")
	for _, addr := range []string{missing, "unix://" + missing, dead} {
		_, _, err := Dial(context.Background(), addr, DialOptions{})
		if !errors.Is(err, ErrNoGateway) {
			t.Errorf("Dial(%s) = %v, want ErrNoGateway", addr, err)
			continue
		}
		if want := strings.TrimPrefix(addr, "unix://"); !strings.Contains(err.Error(), want) {
			t.Errorf("Dial(%s) error %q does not name the socket", addr, err)
		}
	}
}

func TestDialRefusesBadAddresses(t *testing.T) {
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte(testAdminToken), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, addr string
		opts       DialOptions
		want       string
	}{
		{"relative path", "state/admin.sock", DialOptions{}, "unix socket path"},
		{"host without port", "gateway.example", DialOptions{TokenFile: token}, "host:port"},
		{"tcp without token", "127.0.0.1:1", DialOptions{}, "admin token"},
		{"missing token file", "127.0.0.1:1", DialOptions{TokenFile: token + ".nope"}, "token.nope"},
		{"missing CA file", "127.0.0.1:1", DialOptions{TokenFile: token, CAFile: token + ".ca"}, "token.ca"},
		{"CA file without certificates", "127.0.0.1:1", DialOptions{TokenFile: token, CAFile: token}, "no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, closer, err := Dial(context.Background(), tt.addr, tt.opts)
			if err == nil {
				closer.Close()
				t.Fatalf("Dial(%q) succeeded", tt.addr)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Dial(%q) = %v, want an error mentioning %q", tt.addr, err, tt.want)
			}
		})
	}
}
