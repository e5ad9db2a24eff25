package benchreport

import (
	"math"
	"strings"
	"testing"
)

func summary(t *testing.T, input string) *Summary {
	t.Helper()
	run, err := Parse(strings.NewReader(input))
	if err != nil {
		t.Fatal(err)
	}
	return Summarize(run)
}

func TestComparePairsEachFigureWithItsReferenceInTheSameUnit(t *testing.T) {
	s := summary(t, cannedRun)
	pairs := []Pair{
		{Title: "mint", Figure: mint, Reference: rawSign, Units: []string{"ns/op", "allocs/op"}},
		{Title: "sweep", Figure: Ref{pkgGateway, sweepAt(100)}, Reference: Ref{pkgGateway, mintOnlyAt(100)}, Units: []string{"ns/op", "tokens/s"}},
		{Title: "verify", Figure: verify, Reference: rawVerify, Units: []string{"ns/op"}},
		{Title: "alone", Figure: mint, Units: []string{"B/op"}},
	}
	got := Compare(s, pairs)
	if len(got) != 6 {
		t.Fatalf("%d comparisons, want one per unit: 6", len(got))
	}
	for _, tc := range []struct {
		i       int
		ratio   float64 // NaN: none
		missing string
	}{
		{0, 56000.0 / 51000, ""},
		{1, math.NaN(), ""}, // the raw signature allocates nothing: no ratio
		{2, 320000000.0 / 5000000, ""},
		{3, math.NaN(), "reference BenchmarkMintOnly/sandboxes=100 (tokens/s) not in this run"},
		{4, math.NaN(), "BenchmarkVerify (ns/op) not in this run"},
		{5, math.NaN(), ""},
	} {
		c := got[tc.i]
		if math.IsNaN(tc.ratio) != math.IsNaN(c.Ratio) || (!math.IsNaN(tc.ratio) && math.Abs(c.Ratio-tc.ratio) > 1e-12) {
			t.Errorf("%s %s: ratio %v, want %v", c.Title, c.Unit, c.Ratio, tc.ratio)
		}
		if c.Missing() != tc.missing {
			t.Errorf("%s %s: missing %q, want %q", c.Title, c.Unit, c.Missing(), tc.missing)
		}
	}
}

func TestGrowDividesPerLoadColumnsAndMarksMissingLoads(t *testing.T) {
	s := summary(t, cannedRun)
	g := Growth{Loads: []int{100, 1000}, Columns: []GrowthColumn{
		{Pkg: pkgGateway, Name: sweepAt, Unit: "ns/op"},
		{Pkg: pkgGateway, Name: sweepAt, Unit: "ns/op", PerLoad: true},
	}}
	rows := Grow(s, g)
	if len(rows) != 2 {
		t.Fatalf("%d rows", len(rows))
	}
	if c := rows[0].Cells; !c[0].Has || c[0].Stat.Median != 320e6 || c[1].Stat.Median != 3.2e6 || c[1].Stat.Min != 3e6 {
		t.Errorf("load 100: %+v", c)
	}
	if rows[1].Cells[0].Has || rows[1].Cells[1].Has {
		t.Errorf("load 1000 is not in the run but has cells: %+v", rows[1].Cells)
	}
}

func TestWritePutsTheHeadlineFirstAndShowsEveryResult(t *testing.T) {
	var b strings.Builder
	if err := Write(&b, summary(t, cannedRun), Sandkey(), Source{File: "bench/results.txt"}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	headline := strings.Index(out, "## Headline")
	pairs := strings.Index(out, "## Each figure beside its reference")
	growth := strings.Index(out, "## Growth with load")
	every := strings.Index(out, "## Every result")
	if headline < 0 || !(headline < pairs && pairs < growth && growth < every) {
		t.Fatalf("sections out of order:\n%s", out)
	}
	for _, want := range []string{
		"Measured on goos `linux`, goarch `amd64`, cpu `Test CPU @ 1GHz`.",
		"| Mint a token | 56 µs ±7% (n=3) | raw Ed25519 sign: 51 µs ±2% (n=3) | 1.1× |",
		"| Verify a token | missing | raw Ed25519 verify: missing | missing |",
		"| 100 | 320 ms ±6% (n=2) | 3.2 ms ±6% (n=2) | 50 µs ±0% (n=1) | missing | 314 ±6% (n=2) |",
		"| 10,000 | missing | missing | missing | missing | missing |",
		"| pkg/gateway | BenchmarkSweep/sandboxes=100 | tokens/s | 314 | ±6% | 2 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestFormatValueReadsUnits(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		unit string
		want string
	}{
		{812, "ns/op", "812 ns"},
		{52100, "ns/op", "52.1 µs"},
		{12414267929, "ns/op", "12.4 s"},
		{689.8, "p99-µs", "690 µs"},
		{0.29, "p50-µs", "290 ns"},
		{1.5e6, "p50-ns", "1.5 ms"},
		{2048, "B/op", "2 KiB"},
		{3 << 20, "heap-bytes/session", "3 MiB"},
		{18383.4, "tokens/s", "18,383"},
		{0.25, "cpu-ms/s", "0.25"},
		{1226, "registered-p50-ms", "1.23 s"},
		{6.51, "swap-p50-ms", "6.51 ms"},
	} {
		if got := formatValue(tc.v, tc.unit); got != tc.want {
			t.Errorf("formatValue(%v, %s) = %q, want %q", tc.v, tc.unit, got, tc.want)
		}
	}
}

func TestRatioCellSpellsSmallRatiosAsFractions(t *testing.T) {
	c := Comparison{Pair: Pair{Reference: rawSign}, HasFigure: true, HasReference: true, Ratio: 0.002}
	if got := ratioCell(c); got != "0.002× (1/500)" {
		t.Errorf("ratio cell %q", got)
	}
	c.Ratio = 1.0 / 138201565
	if got := ratioCell(c); got != "1/138,201,565" {
		t.Errorf("ratio cell %q", got)
	}
}
