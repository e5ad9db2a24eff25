package vminit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"go.uber.org/zap/zaptest"
)

func TestParseNetworkRefusesBadSettingsNamingThem(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"no prefix length", Config{Address: "10.0.2.15"}, `"10.0.2.15"`},
		{"prefix too long", Config{Address: "10.0.2.15/33"}, `"10.0.2.15/33"`},
		{"IPv6", Config{Address: "fd00::2/64"}, `"fd00::2/64"`},
		{"garbage", Config{Address: "eth0"}, `"eth0"`},
		{"bad gateway", Config{Address: "10.0.2.15/24", Gateway: "gw"}, `"gw"`},
		{"gateway outside network", Config{Address: "10.0.2.15/24", Gateway: "10.0.3.2"}, "10.0.3.2 is outside the interface's network 10.0.2.0/24"},
		{"gateway without address", Config{Gateway: "10.0.2.2"}, "gateway 10.0.2.2 configured without an address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseNetwork(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("parseNetwork(%+v) = %v, want an error containing %q", tt.cfg, err, tt.wantErr)
			}
		})
	}
}

func TestParseNetworkDefaultsInterface(t *testing.T) {
	n, err := parseNetwork(Config{Address: "10.0.2.15/24", Gateway: "10.0.2.2"})
	if err != nil {
		t.Fatal(err)
	}
	if n.iface != "eth0" || n.prefix.String() != "10.0.2.15/24" || n.gateway.String() != "10.0.2.2" {
		t.Fatalf("parseNetwork = %+v", n)
	}
	if n, err := parseNetwork(Config{}); n != nil || err != nil {
		t.Fatalf("parseNetwork(no address) = %v, %v; want nil, nil", n, err)
	}
}

func TestNetmask(t *testing.T) {
	for bits, want := range map[int]string{0: "0.0.0.0", 8: "255.0.0.0", 24: "255.255.255.0", 30: "255.255.255.252", 32: "255.255.255.255"} {
		if got := netmask(bits).String(); got != want {
			t.Errorf("netmask(%d) = %s, want %s", bits, got, want)
		}
	}
}

func TestRtentryMatchesKernelLayout(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("layout pinned for 64-bit")
	}
	// sizeof(struct rtentry) and offsetof(rt_dev) on LP64 Linux.
	if got := unsafe.Sizeof(rtentry{}); got != 120 {
		t.Errorf("sizeof(rtentry) = %d, want 120", got)
	}
	if got := unsafe.Offsetof(rtentry{}.dev); got != 88 {
		t.Errorf("offsetof(rt_dev) = %d, want 88", got)
	}
}

func TestLoadModuleErrorsNamePath(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.ko")
	if err := os.WriteFile(junk, []byte("not an ELF module"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(dir, "missing.ko"), junk} {
		err := loadModule(path, zaptest.NewLogger(t))
		if err == nil || !strings.Contains(err.Error(), "load module "+path) {
			t.Errorf("loadModule(%s) = %v, want an error naming the module", path, err)
		}
	}
}

func TestNeedsInitFalseOutsideVM(t *testing.T) {
	// The test process is not PID 1 (the namespace tests cover PID 1).
	if NeedsInit() {
		t.Fatal("NeedsInit() = true in an ordinary process")
	}
}
