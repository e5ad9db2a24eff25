package session

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
)

func TestParseTarget(t *testing.T) {
	cases := []struct {
		in   string
		want Target
		err  string
	}{
		{in: "unix:///run/sandkey/gw/gw.sock", want: Target{Scheme: "unix", Path: "/run/sandkey/gw/gw.sock"}},
		{in: "vsock://2:1024", want: Target{Scheme: "vsock", CID: 2, Port: 1024}},
		{in: "vsock://4294967295:1", want: Target{Scheme: "vsock", CID: 4294967295, Port: 1}},
		{in: "tcp://10.0.2.100:1024", want: Target{Scheme: "tcp", Addr: "10.0.2.100:1024"}},
		{in: "tcp://[::1]:8443", want: Target{Scheme: "tcp", Addr: "[::1]:8443"}},
		{in: "tls://gateway.example:443", want: Target{Scheme: "tls", Addr: "gateway.example:443"}},
		{in: "unix://relative/path", err: "absolute"},
		{in: "unix:///", want: Target{Scheme: "unix", Path: "/"}},
		{in: "vsock://x:1024", err: "context id"},
		{in: "vsock://2:99999999999", err: "port"},
		{in: "vsock://2", err: "port"},
		{in: "tcp://host", err: "host:port"},
		{in: "tcp://:80", err: "host:port"},
		{in: "tcp://host:0", err: "port"},
		{in: "tcp://host:http", err: "port"},
		{in: "tcp://host:80/path", err: "host:port"},
		{in: "tls://host:443?x=1", err: "query"},
		{in: "http://host:80", err: "unknown scheme"},
		{in: "/run/gw.sock", err: "no scheme"},
		{in: "", err: "no scheme"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTarget(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "\""+tc.in+"\"") {
					t.Fatalf("err = %v, want one naming %q and saying %q", err, tc.in, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			if back, err := ParseTarget(got.String()); err != nil || back != got {
				t.Fatalf("round trip of %s: %+v, %v", got, back, err)
			}
		})
	}
}

func TestDialBuildsEveryTransportLazily(t *testing.T) {
	// Dial never connects: this checks the vsock path without touching a
	// vsock device (the build machine's CID 2 is not ours).
	for _, target := range []string{"vsock://2:1024", "unix:///nonexistent/gw.sock", "tcp://127.0.0.1:9", "tls://127.0.0.1:9"} {
		conn, err := Dial(context.Background(), target)
		if err != nil {
			t.Fatalf("dial %s: %v", target, err)
		}
		if err := conn.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDialRefusesTLSConfigWithoutTLSTarget(t *testing.T) {
	_, err := Dial(context.Background(), "unix:///x/gw.sock", WithTLSConfig(&tls.Config{}))
	if err == nil || !strings.Contains(err.Error(), "unix:///x/gw.sock") {
		t.Fatalf("err = %v, want a refusal naming the target", err)
	}
	_, err = Dial(context.Background(), "carrier-pigeon://coop")
	if err == nil || !strings.Contains(err.Error(), "carrier-pigeon://coop") {
		t.Fatalf("err = %v, want a parse error naming the target", err)
	}
}
