package badinput

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/sandkey/sandkey/pkg/gatewaycmd"
	"github.com/sandkey/sandkey/test/binaries"
)

// tree lists every path under dir with its mode, to tell "nothing changed".
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err == nil {
			out = append(out, path+" "+fi.Mode().String())
		}
		return nil
	})
	return out
}

func TestServeRefusesBadConfigurationNamingItAndCreatesNothing(t *testing.T) {
	dir, err := os.MkdirTemp("", "sk") // short: the state directory's length is checked
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	for i, tc := range []struct {
		name   string
		config string // the YAML file's content; "" for no file
		env    []string
		args   []string
		want   []string
		// namesFile: the message names the file (a value that does not
		// parse); a value that parses but is refused names the setting.
		namesFile bool
	}{
		{name: "unknown key", config: "token-lifetime: 1h\nbogus: 1\n", want: []string{`unknown setting "bogus"`}, namesFile: true},
		{name: "bad duration", config: "token-lifetime: soon\n", want: []string{"token-lifetime", `invalid duration "soon"`}, namesFile: true},
		{name: "not YAML", config: "{{{ not yaml", want: []string{"not a YAML mapping"}, namesFile: true},
		{name: "a YAML list, not a mapping", config: "- token-lifetime\n- 1h\n", want: []string{"not a YAML mapping"}, namesFile: true},
		{name: "nested mapping", config: "token:\n  lifetime: 1h\n", want: []string{"nested mappings are not settings"}, namesFile: true},
		{name: "binary junk", config: "\x00\xff\xfe\x01", want: []string{"not a YAML mapping"}, namesFile: true},
		{name: "lifetime under the minimum", config: "token-lifetime: 5s\n", want: []string{"token lifetime 5s: must be at least 10s"}},
		{name: "lifetime of zero", config: "token-lifetime: 0s\n", want: []string{"token lifetime 0s: must be at least 10s"}},
		{name: "lifetime never", config: "token-lifetime: never\n", want: []string{`invalid duration "never"`}, namesFile: true},
		{name: "negative lifetime", args: []string{"--token-lifetime=-1h"}, want: []string{"token lifetime -1h0m0s: must be at least 10s"}},
		{name: "sweep slower than a quarter of the lifetime", config: "token-lifetime: 10s\nsweep-interval: 5s\n", want: []string{"sweep interval 5s"}},
		{name: "unknown driver", config: "drivers: [process, bogus]\n", want: []string{`--drivers: unknown driver "bogus"`}},
		{name: "bad log level", config: "log-level: loud\n", want: []string{`--log-level "loud"`}},
		{name: "missing config file", args: []string{"--config", filepath.Join(dir, "nope.yaml")}, want: []string{"nope.yaml: no such file or directory"}},
		{name: "bad environment variable", env: []string{"SANDKEY_TOKEN_LIFETIME=forever"}, want: []string{`SANDKEY_TOKEN_LIFETIME="forever"`}},
		{name: "unknown flag", args: []string{"--token-lifetme", "1h"}, want: []string{"unknown flag: --token-lifetme"}},
		{name: "operand", args: []string{"now"}, want: []string{"takes no arguments"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state := filepath.Join(dir, fmt.Sprintf("state%d", i))
			args := []string{"serve", "--state-dir", state, "--http-addr", "", "--supervisor", binaries.Supervisor}
			var want []string
			if tc.config != "" {
				path := filepath.Join(dir, fmt.Sprintf("gateway%d.yaml", i))
				if err := os.WriteFile(path, []byte(tc.config), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", path)
				if tc.namesFile {
					want = append(want, "config file "+path)
				}
			}
			r := runGateway(t, tc.env, append(args, tc.args...)...)
			checkClearError(t, r, gatewaycmd.ExitUsage, append(want, tc.want...)...)
			if _, err := os.Lstat(state); !os.IsNotExist(err) {
				t.Errorf("a refused configuration left a state directory behind (%v): %v", err, tree(t, state))
			}
		})
	}
}

func TestServeRefusesAStoreThatIsNotADatabaseAndLeavesItUntouched(t *testing.T) {
	junk := make([]byte, 8192)
	rand.Read(junk)
	for _, tc := range []struct {
		name  string
		store []byte
		want  string
	}{
		{"random bytes", junk, "does not start with the SQLite header; it was left untouched"},
		{"too short for a database", []byte("SQLite"), "too short for an SQLite database; it was left untouched"},
		{"SQLite header over garbage", append([]byte("SQLite format 3\x00"), junk...), "is damaged"},
		{"a text file", bytes.Repeat([]byte("sandboxes:\n  - web\n"), 20), "does not start with the SQLite header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "sk")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(dir)
			state := filepath.Join(dir, "state")
			if err := os.Mkdir(state, 0o700); err != nil {
				t.Fatal(err)
			}
			db := filepath.Join(state, "sandkey.db")
			if err := os.WriteFile(db, tc.store, 0o600); err != nil {
				t.Fatal(err)
			}
			r := runGateway(t, nil, "serve", "--state-dir", state, "--http-addr", "", "--supervisor", binaries.Supervisor)
			// A configuration to fix (--store names no usable database): 2.
			checkClearError(t, r, gatewaycmd.ExitUsage, db, tc.want, "--store")
			if got, err := os.ReadFile(db); err != nil || !bytes.Equal(got, tc.store) {
				t.Errorf("the store file changed (%v)", err)
			}
			for _, sidecar := range []string{db + "-wal", db + "-shm", db + "-journal"} {
				if _, err := os.Lstat(sidecar); err == nil {
					t.Errorf("%s was created beside the refused store", sidecar)
				}
			}
		})
	}
}

func TestServeRefusesAStateDirectoryOthersCanReadAndWritesNothingInIt(t *testing.T) {
	dir, err := os.MkdirTemp("", "sk")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(state, 0o755) // whatever the umask
	before := tree(t, state)
	r := runGateway(t, nil, "serve", "--state-dir", state, "--http-addr", "", "--supervisor", binaries.Supervisor)
	checkClearError(t, r, gatewaycmd.ExitUsage, "has mode 0755", "chmod 700 "+state)
	if after := tree(t, state); !slices.Equal(before, after) {
		t.Errorf("the refused state directory changed:\nbefore %v\nafter  %v", before, after)
	}
}
