package gatewaycmd

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/sandkey/sandkey/test/binaries"
)

func newTestFlags() (*pflag.FlagSet, *time.Duration, *string, *[]string) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	lifetime := fs.Duration("token-lifetime", time.Hour, "")
	issuer := fs.String("issuer", "default-issuer", "")
	drivers := fs.StringSlice("drivers", []string{"process"}, "")
	fs.String("config", "", "")
	return fs, lifetime, issuer, drivers
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigPrecedenceIsFlagThenEnvThenFile(t *testing.T) {
	path := writeConfig(t, "token-lifetime: 2m\nissuer: from-file\ndrivers: [process, docker]\n")
	t.Setenv("SANDKEY_ISSUER", "from-env")

	fs, lifetime, issuer, drivers := newTestFlags()
	if err := fs.Parse([]string{"--token-lifetime=3m"}); err != nil {
		t.Fatal(err)
	}
	if _, err := applyConfig(fs, path, map[string]bool{"config": true}); err != nil {
		t.Fatal(err)
	}
	if *lifetime != 3*time.Minute || *issuer != "from-env" || strings.Join(*drivers, ",") != "process,docker" {
		t.Fatalf("lifetime %s (want flag's 3m), issuer %q (want env's), drivers %v (want file's)", *lifetime, *issuer, *drivers)
	}
	if !fs.Changed("issuer") || !fs.Changed("drivers") {
		t.Fatal("settings from the environment and the file must count as set")
	}
}

func TestConfigErrorsNameTheirSource(t *testing.T) {
	cases := map[string]struct {
		file string
		env  map[string]string
		want string
	}{
		"unknown key":       {file: "token-lifetim: 1h\n", want: `unknown setting "token-lifetim"`},
		"underscored key":   {file: "token_lifetime: 1h\n", want: `unknown setting "token_lifetime" (did you mean "token-lifetime"?)`},
		"list for a scalar": {file: "issuer: [a, b]\n", want: "issuer: a list, but the setting takes one value"},
		"bad file value":    {file: "token-lifetime: forever\n", want: "token-lifetime"},
		"nested mapping":    {file: "issuer:\n  name: x\n", want: "nested mappings"},
		"not yaml":          {file: "{{{", want: "not a YAML mapping"},
		"bad env value":     {env: map[string]string{"SANDKEY_TOKEN_LIFETIME": "soon"}, want: "environment SANDKEY_TOKEN_LIFETIME"},
		"config not a file": {file: "", want: "config file"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			path := ""
			if tc.file != "" {
				path = writeConfig(t, tc.file)
			}
			if name == "config not a file" {
				path = t.TempDir() // a directory
			}
			fs, _, _, _ := newTestFlags()
			_, err := applyConfig(fs, path, map[string]bool{"config": true})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestEmptyConfigFileIsNoSettings(t *testing.T) {
	fs, lifetime, _, _ := newTestFlags()
	if _, err := applyConfig(fs, writeConfig(t, ""), nil); err != nil {
		t.Fatal(err)
	}
	if *lifetime != time.Hour {
		t.Fatalf("lifetime %s, want the default", *lifetime)
	}
}

func TestServeRefusesBadConfigAtStart(t *testing.T) {
	dir := t.TempDir()
	var out, errb strings.Builder
	path := writeConfig(t, "token-lifetime: 5s\n")
	code := Main(t.Context(), []string{"--state-dir", filepath.Join(dir, "s"), "serve", "--config", path, "--http-addr", ""}, &out, &errb)
	if code == ExitOK || !strings.Contains(errb.String(), "at least 10s") {
		t.Fatalf("exit %d, stderr %q; want a refusal of the 5s lifetime", code, errb.String())
	}
	code = Main(t.Context(), []string{"--state-dir", filepath.Join(dir, "s"), "serve", "--config", writeConfig(t, "colour: blue\n")}, &out, &errb)
	if code != ExitUsage || !strings.Contains(errb.String(), `unknown setting "colour"`) {
		t.Fatalf("exit %d, stderr %q; want ExitUsage naming the key", code, errb.String())
	}
}

func TestServeRefusesContradictoryReplicaSettingsSayingWhy(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "s")
	full := []string{"--replica-advertise", "gw-0.gw:7443", "--store", "postgres://u:p@127.0.0.1:1/db",
		"--drivers", "kubernetes", "--admin-tcp", "127.0.0.1:0", "--admin-tls-cert", "c.pem", "--admin-tls-key", "k.pem",
		"--admin-token-file", "t", "--session-addr", "127.0.0.1:0"}
	without := func(flag string) []string {
		var out []string
		for i := 0; i < len(full); i += 2 {
			if full[i] != flag {
				out = append(out, full[i], full[i+1])
			}
		}
		return out
	}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"sqlite store", without("--store"), []string{"--store", "Postgres DSN"}},
		{"a local driver", append(without("--drivers"), "--drivers", "kubernetes,process"), []string{"--drivers kubernetes,process", "their own host"}},
		{"no admin token", without("--admin-token-file"), []string{"--admin-token-file", "forward"}},
		{"no shared session listener", without("--session-addr"), []string{"--session-addr", "Service"}},
		{"advertise without port", append(without("--replica-advertise"), "--replica-advertise", "gw-0"), []string{"want host:port"}},
		{"short lease", []string{"--leader-lease", "2s"}, []string{"--leader-lease 2s", "at least 3s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb strings.Builder
			args := append([]string{"--state-dir", state, "serve", "--http-addr", ""}, tt.args...)
			code := Main(t.Context(), args, &out, &errb)
			if code != ExitUsage {
				t.Fatalf("exit %d, want ExitUsage; stderr %q", code, errb.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr %q does not say %q", errb.String(), w)
				}
			}
		})
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("a refused start created the state directory (stat: %v)", err)
	}
}

func TestServeRefusesBadSettingsNamingTheFlagAndTheFix(t *testing.T) {
	dir := binaries.TempDir(t, "skcfg")
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	busy := held.Addr().String()
	otherFiles := filepath.Join(dir, "data")
	if err := os.MkdirAll(otherFiles, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(otherFiles, "precious"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		// The gateway reads a zero as its default: 0 given on purpose
		// would silently be 10s; a negative one reached a ticker.
		{"zero heartbeat", []string{"--heartbeat-interval", "0"}, nil, []string{"--heartbeat-interval 0s", "must be positive"}},
		{"negative heartbeat", []string{"--heartbeat-interval", "-1s"}, nil, []string{"--heartbeat-interval -1s", "must be positive"}},
		{"zero stop grace", []string{"--stop-grace", "0"}, nil, []string{"--stop-grace 0s", "default 10s"}},
		{"zero sweep from the environment", nil, map[string]string{"SANDKEY_SWEEP_INTERVAL": "0s"}, []string{"--sweep-interval 0s"}},
		{"zero JWKS max-age", []string{"--jwks-max-age", "0"}, nil, []string{"--jwks-max-age 0s"}},
		{"sweep slower than a quarter lifetime, from the config file", []string{"--config", writeConfig(t, "sweep-interval: 20m\n")}, nil,
			[]string{"at most a quarter of the token lifetime", "--sweep-interval came from the config file"}},
		// Where a setting the operator did not type came from.
		{"unknown driver from the environment", nil, map[string]string{"SANDKEY_DRIVERS": "process,nope"},
			[]string{`--drivers: unknown driver "nope"`, "--drivers came from the environment, SANDKEY_DRIVERS"}},
		{"default driver from the config file", []string{"--config", writeConfig(t, "driver: docker\n")}, nil,
			[]string{"--driver docker", "--driver came from the config file"}},
		{"default driver not enabled", []string{"--drivers", "kubernetes", "--driver", "process"}, nil,
			[]string{"--driver process", "not among --drivers kubernetes", "--drivers kubernetes,process"}},
		{"admin TCP without TLS", []string{"--admin-tcp", "127.0.0.1:0"}, nil,
			[]string{"--admin-tcp 127.0.0.1:0", "--admin-tls-cert", "--admin-tls-key", "--admin-token-file"}},
		{"session TLS without a session listener", []string{"--session-tls-cert", "c.pem", "--session-tls-key", "k.pem"}, nil,
			[]string{"--session-addr, which is not set"}},
		{"admin TLS without the TCP operator API", []string{"--admin-tls-cert", "c.pem", "--admin-tls-key", "k.pem"}, nil,
			[]string{"--admin-tcp, which is not set"}},
		{"missing key file", []string{"--key-file", filepath.Join(dir, "absent.key")}, nil,
			[]string{"--key-file", "absent.key", "no such file"}},
		{"store in a missing directory", []string{"--store", filepath.Join(dir, "absent", "sandkey.db")}, nil,
			[]string{"--store", "does not exist", "mkdir -m 700"}},
		{"a token root of other files", []string{"--token-root", otherFiles}, nil,
			[]string{"--token-root", "no sandbox's directory", "new or empty directory"}},
		{"a state directory that is a file", nil, nil, []string{"--state-dir", "precious", "not a directory"}},
		{"an HTTP address in use", []string{"--http-addr", busy}, nil,
			[]string{"--http-addr " + busy, "address already in use", "SANDKEY_HTTP_ADDR does it for make run"}},
		{"the CLI's own flag in the config file", []string{"--config", writeConfig(t, "output: json\n")}, nil,
			[]string{`unknown setting "output"`}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			state := filepath.Join(dir, fmt.Sprintf("s%d", i))
			if tt.name == "a state directory that is a file" {
				state = filepath.Join(otherFiles, "precious")
			}
			var out, errb strings.Builder
			// The process driver is built before the store opens; it needs a
			// supervisor path, not a supervisor.
			args := append([]string{"--state-dir", state, "serve", "--supervisor", "/bin/true", "--http-addr", ""}, tt.args...)
			// A gateway that accepts the setting serves until this ends.
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			if code := Main(ctx, args, &out, &errb); code != ExitUsage {
				t.Fatalf("exit %d, want ExitUsage (2); stderr %q", code, errb.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr %q does not say %q", errb.String(), w)
				}
			}
		})
	}
}

func TestServeDefaultDriverIsAnEnabledOne(t *testing.T) {
	tests := []struct {
		enabled []string
		given   string // "" leaves --driver unset
		want    string
	}{
		{[]string{"process"}, "", "process"},
		{[]string{"docker"}, "", "docker"},
		{[]string{"podman", "process"}, "", "process"},
		{[]string{"docker", "podman"}, "podman", "podman"},
	}
	for _, tt := range tests {
		o := &serveOptions{defaultDriver: "process", drivers: driverOptions{enabled: tt.enabled}}
		if tt.given != "" {
			o.defaultDriver = tt.given
		}
		if err := checkDefaultDriver(o, tt.given != ""); err != nil || o.defaultDriver != tt.want {
			t.Errorf("--drivers %v --driver %q: default %q (err %v), want %q", tt.enabled, tt.given, o.defaultDriver, err, tt.want)
		}
	}
}

func TestUnknownSandkeyVariablesAreListed(t *testing.T) {
	t.Setenv("SANDKEY_TOKEN_LIFETIM", "1h") // a typo
	t.Setenv("SANDKEY_ISSUER", "x")         // a setting
	t.Setenv("SANDKEY_CONFIG", "")          // --config's
	fs, _, _, _ := newTestFlags()
	got := unknownEnv(fs)
	if !slices.Contains(got, "SANDKEY_TOKEN_LIFETIM") || slices.Contains(got, "SANDKEY_ISSUER") || slices.Contains(got, "SANDKEY_CONFIG") {
		t.Fatalf("unknownEnv = %v, want the typo alone of these", got)
	}
}
