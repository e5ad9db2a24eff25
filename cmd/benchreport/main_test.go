package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const good = "pkg: github.com/sandkey/sandkey/pkg/auth\nBenchmarkMint-2 10 5000 ns/op\nBenchmarkRawEd25519Sign-2 10 4000 ns/op\n"

func TestExitCodesAndMessages(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	goodFile := write("good.txt", good)
	badFile := write("bad.txt", good+"BenchmarkVerify-2 10 5000\n")
	emptyFile := write("empty.txt", "PASS\n")
	for _, tc := range []struct {
		name     string
		args     []string
		stdin    string
		code     int
		stdout   string // a substring, "" for none at all
		stderr   string
		noStdout bool
	}{
		{"a file", []string{goodFile}, "", 0, "| Mint a token | 5 µs ±0% (n=1) | raw Ed25519 sign: 4 µs ±0% (n=1) | 1.25× |", "", false},
		{"standard input", nil, good, 0, "Generated from `standard input`", "", false},
		{"malformed line", []string{badFile}, "", 1, "", "bad.txt: 1 malformed benchmark line(s); line 4: value without a unit", true},
		{"malformed line skipped", []string{"-skip-malformed", badFile}, "", 0, "**1 malformed line(s) of the results were skipped**", "skipped line 4", false},
		{"no results", []string{emptyFile}, "", 1, "", "holds no benchmark results; run make bench first", true},
		{"missing file", []string{filepath.Join(dir, "nope.txt")}, "", 1, "", "nope.txt: no such file or directory", true},
		{"two files", []string{goodFile, goodFile}, "", 2, "", "usage: benchreport", true},
		{"unknown flag", []string{"-x"}, "", 2, "", "flag provided but not defined: -x", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tc.args, strings.NewReader(tc.stdin), &out, &errb)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr %s", code, tc.code, errb.String())
			}
			if !strings.Contains(out.String(), tc.stdout) || (tc.noStdout && out.Len() > 0) {
				t.Errorf("stdout lacks %q (or should be empty):\n%s", tc.stdout, out.String())
			}
			if !strings.Contains(errb.String(), tc.stderr) {
				t.Errorf("stderr %q lacks %q", errb.String(), tc.stderr)
			}
		})
	}
}
