package benchreport

import (
	"errors"
	"math"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const cannedRun = `goos: linux
goarch: amd64
pkg: github.com/sandkey/sandkey/pkg/auth
cpu: Test CPU @ 1GHz
BenchmarkRawEd25519Sign-2   	   20000	     50000 ns/op	       0 B/op	       0 allocs/op
BenchmarkRawEd25519Sign-2   	   20000	     52000 ns/op	       0 B/op	       0 allocs/op
BenchmarkRawEd25519Sign-2   	   20000	     51000 ns/op	       0 B/op	       0 allocs/op
BenchmarkMint-2             	   20000	     56000 ns/op	     560 B/op	       5 allocs/op
BenchmarkMint-2             	   20000	     54000 ns/op	     560 B/op	       5 allocs/op
BenchmarkMint-2             	   20000	     60000 ns/op	     560 B/op	       5 allocs/op
PASS
ok  	github.com/sandkey/sandkey/pkg/auth	12.3s
pkg: github.com/sandkey/sandkey/pkg/gateway
BenchmarkSweep/sandboxes=100-2 	 4	 300000000 ns/op	 333 tokens/s
BenchmarkSweep
    bench_test.go:12: a log line of the benchmark
BenchmarkSweep/sandboxes=100-2 	 4	 340000000 ns/op	 294 tokens/s
BenchmarkMintOnly/sandboxes=100-2 	 200	 5000000 ns/op
ok  	github.com/sandkey/sandkey/pkg/gateway	80s
`

func TestParseReadsResultsConfigAndPackages(t *testing.T) {
	run, err := Parse(strings.NewReader(cannedRun))
	if err != nil {
		t.Fatal(err)
	}
	if got := run.Config["cpu"]; got != "Test CPU @ 1GHz" {
		t.Errorf("cpu = %q", got)
	}
	if _, ok := run.Config["pkg"]; ok {
		t.Error("pkg kept as configuration; it belongs to the results")
	}
	if len(run.Results) != 9 {
		t.Fatalf("%d results, want 9", len(run.Results))
	}
	first := run.Results[0]
	want := Result{Pkg: Module + "/pkg/auth", Name: "BenchmarkRawEd25519Sign", Procs: 2, Iterations: 20000,
		Values: []Value{{50000, "ns/op"}, {0, "B/op"}, {0, "allocs/op"}}, Line: 5}
	if !equalResult(first, want) {
		t.Errorf("first result = %+v, want %+v", first, want)
	}
	sweep := run.Results[6]
	if sweep.Pkg != Module+"/pkg/gateway" || sweep.Name != "BenchmarkSweep/sandboxes=100" || sweep.Line != 14 {
		t.Errorf("sweep result = %+v", sweep)
	}
}

func equalResult(a, b Result) bool {
	if a.Pkg != b.Pkg || a.Name != b.Name || a.Procs != b.Procs || a.Iterations != b.Iterations ||
		a.Line != b.Line || len(a.Values) != len(b.Values) {
		return false
	}
	for i := range a.Values {
		if a.Values[i] != b.Values[i] {
			return false
		}
	}
	return true
}

func TestParseNamesEveryMalformedLineAndKeepsTheRest(t *testing.T) {
	for _, tc := range []struct {
		name string
		line string
		want error
	}{
		{"log output interleaved with the result", `BenchmarkSweep/sandboxes=100-2   {"level":"info","msg":"swept"}`, ErrIterations},
		{"negative iterations", "BenchmarkMint-2 -5 100 ns/op", ErrIterations},
		{"zero iterations", "BenchmarkMint-2 0 100 ns/op", ErrIterations},
		{"iterations only", "BenchmarkMint-2 100", ErrNoValues},
		{"value without unit", "BenchmarkMint-2 100 5000 ns/op 12", ErrMissingUnit},
		{"value not a number", "BenchmarkMint-2 100 fast ns/op", ErrBadValue},
		{"NaN value", "BenchmarkMint-2 100 NaN ns/op", ErrBadValue},
		{"infinite value", "BenchmarkMint-2 100 +Inf ns/op", ErrBadValue},
		{"unit twice", "BenchmarkMint-2 100 5 ns/op 6 ns/op", ErrDuplicateUnit},
		{"truncated line", "BenchmarkMint-2 \t 100\t 50", ErrMissingUnit},
		{"line too long", "BenchmarkMint-2 100 " + strings.Repeat("9", MaxLineLength) + " ns/op", ErrLineTooLong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			input := "pkg: p\nBenchmarkGood-2 10 100 ns/op\n" + tc.line + "\nBenchmarkGood-2 10 300 ns/op\n"
			run, err := Parse(strings.NewReader(input))
			var perr *ParseError
			if !errors.As(err, &perr) {
				t.Fatalf("error = %v, want a *ParseError", err)
			}
			if len(perr.Errs) != 1 || perr.Errs[0].Line != 3 || !errors.Is(perr.Errs[0], tc.want) {
				t.Fatalf("errors = %v, want one on line 3 wrapping %v", perr.Errs, tc.want)
			}
			if msg := err.Error(); !strings.Contains(msg, "line 3") || len(msg) > 600 {
				t.Errorf("message %q does not name line 3 or is not short", msg)
			}
			if len(run.Results) != 2 {
				t.Errorf("%d good results kept, want 2", len(run.Results))
			}
		})
	}
}

func TestParseIgnoresLinesThatAreNotResults(t *testing.T) {
	input := strings.Join([]string{
		"PASS",
		"FAIL\tgithub.com/x\t1s",
		"--- FAIL: BenchmarkX",
		"    bench_test.go:1: BenchmarkMint 1 ns/op in a log line",
		"BenchmarkSweep",                   // announcement before log output
		"Benchmarking is fun",              // not a benchmark name: lower case follows
		"Benchmarks 12 ns/op",              // idem
		"goos linux",                       // not a configuration line
		"Key: Value",                       // configuration keys are lower case
		"",                                 // blank
		"\x00\xff\xfe garbage",             // binary junk
		"BenchmarkOK 1 2 ns/op\r",          // CRLF, no -P suffix
		"BenchmarkOK-x 1 2 ns/op",          // a name ending in a non-number is a name
		"BenchmarkÜber-4 7 1.5e3 MB/s 1 x", // a non-lower-case rune may follow
	}, "\n")
	run, err := Parse(strings.NewReader(input))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range run.Results {
		names = append(names, r.Name)
	}
	if got := strings.Join(names, ","); got != "BenchmarkOK,BenchmarkOK-x,BenchmarkÜber" {
		t.Fatalf("results %s", got)
	}
	if run.Results[0].Procs != 1 || run.Results[2].Procs != 4 || run.Results[2].Values[0].Value != 1500 {
		t.Errorf("results %+v", run.Results)
	}
}

func TestParseErrorListsAtMostTwentyLines(t *testing.T) {
	input := strings.Repeat("BenchmarkBad-2 x 1 ns/op\n", 50)
	_, err := Parse(strings.NewReader(input))
	var perr *ParseError
	if !errors.As(err, &perr) || len(perr.Errs) != 50 {
		t.Fatalf("error %v", err)
	}
	if !strings.Contains(err.Error(), "and 30 more") {
		t.Errorf("message does not say how many more: %s", err.Error()[len(err.Error())-80:])
	}
}

func TestParseReportsReadErrors(t *testing.T) {
	_, err := Parse(failingReader{})
	if err == nil || !strings.Contains(err.Error(), "read benchmark output at line 1") {
		t.Fatalf("error = %v", err)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestSummarizeTakesMedianAndSpreadPerUnit(t *testing.T) {
	run, err := Parse(strings.NewReader(cannedRun))
	if err != nil {
		t.Fatal(err)
	}
	s := Summarize(run)
	mint := s.Lookup(Module+"/pkg/auth", "BenchmarkMint")
	if mint == nil || mint.Runs != 3 {
		t.Fatalf("mint = %+v", mint)
	}
	ns, _ := mint.Stat("ns/op")
	if ns.Median != 56000 || ns.Min != 54000 || ns.Max != 60000 || ns.N != 3 {
		t.Errorf("ns/op = %+v", ns)
	}
	if sp := ns.Spread(); math.Abs(sp-4000.0/56000) > 1e-12 {
		t.Errorf("spread = %v", sp)
	}
	sweep := s.Lookup(Module+"/pkg/gateway", "BenchmarkSweep/sandboxes=100")
	if st, _ := sweep.Stat("ns/op"); st.Median != 320000000 {
		t.Errorf("median of an even count = %v, want the mean of the middle two", st.Median)
	}
	if (Stat{Median: 0, Min: 0, Max: 1}).Spread() != math.Inf(1) {
		t.Error("spread around a zero median is not infinite")
	}
	if (Stat{}).Spread() != 0 {
		t.Error("spread of all zeros is not 0")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(cannedRun)
	f.Add("BenchmarkX-2 1 2 ns/op 3")
	f.Add("pkg: a\nBenchmarkY 9223372036854775807 1e308 u\r\n")
	f.Add("Benchmark\n\n\r\n-")
	f.Fuzz(func(t *testing.T, input string) {
		run, err := Parse(strings.NewReader(input))
		if run == nil {
			t.Fatal("nil run")
		}
		var perr *ParseError
		if err != nil && !errors.As(err, &perr) {
			t.Fatalf("error %v is not a *ParseError", err)
		}
		for _, r := range run.Results {
			if r.Iterations < 1 || len(r.Values) == 0 || !strings.HasPrefix(r.Name, "Benchmark") {
				t.Fatalf("bad result %+v", r)
			}
			for _, v := range r.Values {
				if math.IsNaN(v.Value) || math.IsInf(v.Value, 0) || v.Unit == "" {
					t.Fatalf("bad value %+v", v)
				}
			}
		}
		// Whatever parsed must summarise and render.
		var b strings.Builder
		if err := Write(&b, Summarize(run), Sandkey(), Source{File: "fuzz"}); err != nil {
			t.Fatal(err)
		}
	})
}
