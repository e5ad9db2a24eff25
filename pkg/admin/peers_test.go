package admin

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPeersCloseConnectionsLeftUnusedAndKeepThoseInUse(t *testing.T) {
	f := writeTLSFiles(t)
	p, err := NewPeers(PeerConfig{TokenFile: f.token, PinFile: f.cert})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	p.now = func() time.Time { return now }

	// grpc dials lazily: no peer need listen at these addresses.
	_, releaseGone, err := p.acquire("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	_, releaseBusy, err := p.acquire("127.0.0.1:2")
	if err != nil {
		t.Fatal(err)
	}
	_, releaseAgain, err := p.acquire("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if n := p.open(); n != 2 {
		t.Fatalf("two calls to one address and one to another opened %d connections, want 2", n)
	}
	releaseGone()
	releaseAgain()
	releaseAgain() // releasing twice counts once
	now = now.Add(peerIdle)
	_, releaseNew, err := p.acquire("127.0.0.1:3")
	if err != nil {
		t.Fatal(err)
	}
	defer releaseNew()
	defer releaseBusy()
	if n := p.open(); n != 2 {
		t.Fatalf("after %s, %d connections are open; want the one in use and the new one", peerIdle, n)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.acquire("127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "stopping") {
		t.Fatalf("acquire after Close = %v, want an error saying the gateway stops", err)
	}
}

func TestNewPeersRefusesConfigurationItCannotUse(t *testing.T) {
	f := writeTLSFiles(t)
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	writeFile(t, notPEM, []byte("not a certificate"), 0o644)
	tests := []struct {
		name string
		cfg  PeerConfig
		want string
	}{
		{"no token", PeerConfig{PinFile: f.cert}, "--admin-token-file"},
		{"neither CA nor pin", PeerConfig{TokenFile: f.token}, "--peer-ca"},
		{"CA file missing", PeerConfig{TokenFile: f.token, CAFile: filepath.Join(t.TempDir(), "nope.pem")}, "nope.pem"},
		{"CA file without a certificate", PeerConfig{TokenFile: f.token, CAFile: notPEM}, "no PEM certificate"},
		{"pin without a certificate", PeerConfig{TokenFile: f.token, PinFile: f.key}, "no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPeers(tt.cfg)
			if err == nil {
				p.Close()
				t.Fatalf("NewPeers(%+v) accepted it", tt.cfg)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewPeers(%+v) = %v, want an error mentioning %q", tt.cfg, err, tt.want)
			}
		})
	}
}
