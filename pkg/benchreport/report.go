package benchreport

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Source describes where a report's numbers came from, for its preamble.
type Source struct {
	File    string // the results file, as named to the reader
	Skipped int    // malformed lines left out (only with -skip-malformed)
}

// Write renders the report of s in Markdown: the headline table first,
// then every pair, the growth tables, and every result of the run.
func Write(w io.Writer, s *Summary, layout Layout, src Source) error {
	bw := bufio.NewWriter(w)
	p := func(format string, args ...any) { fmt.Fprintf(bw, format, args...) }

	p("# sandkey benchmark report\n\n")
	p("Generated from `%s` by `make bench-report` (`go run ./cmd/benchreport`); do not edit by hand.\n", src.File)
	if env := environment(s.Config); env != "" {
		p("Measured on %s.\n", env)
	}
	p("\nEvery figure is the median of its runs (`-count`); ±x%% is the largest distance of any run from that median; " +
		"a ratio is the figure's median divided by its reference's, both measured in the same run.\n")
	if src.Skipped > 0 {
		p("\n**%d malformed line(s) of the results were skipped**; see the warnings of `benchreport`.\n", src.Skipped)
	}

	p("\n## Headline\n\n")
	p("| What | sandkey | Reference | Ratio |\n|---|---|---|---|\n")
	for _, c := range Compare(s, layout.Headline) {
		ref := "—"
		if !c.Pair.Reference.IsZero() {
			ref = c.Pair.Note + ": " + cellStat(c.Reference, c.HasReference, c.Unit)
		}
		p("| %s%s | %s | %s | %s |\n", cell(c.Title), unitSuffix(c), cellStat(c.Figure, c.HasFigure, c.Unit), cell(ref), ratioCell(c))
	}

	p("\n## Each figure beside its reference\n\n")
	p("| Figure | Unit | sandkey | Reference | Ratio |\n|---|---|---|---|---|\n")
	notes := map[string]bool{}
	var noteOrder []string
	for _, c := range Compare(s, layout.Pairs) {
		p("| %s | %s | %s | %s | %s |\n", cell(c.Title), cell(c.Unit),
			cellStat(c.Figure, c.HasFigure, c.Unit),
			cell(c.Pair.Reference.Name)+": "+cellStat(c.Reference, c.HasReference, c.Unit), ratioCell(c))
		if c.Note != "" && !notes[c.Note] {
			notes[c.Note] = true
			noteOrder = append(noteOrder, c.Note)
		}
	}
	if len(noteOrder) > 0 {
		p("\nWhat each reference is:\n\n")
		for _, n := range noteOrder {
			p("- %s\n", n)
		}
	}

	p("\n## Growth with load\n")
	for _, g := range layout.Growth {
		p("\n### %s\n\n", g.Title)
		if g.Note != "" {
			p("%s\n\n", g.Note)
		}
		p("| %s |", cell(g.Load))
		for _, col := range g.Columns {
			p(" %s |", cell(col.Header))
		}
		p("\n|---|%s\n", strings.Repeat("---|", len(g.Columns)))
		for _, row := range Grow(s, g) {
			p("| %s |", groupThousands(float64(row.Load)))
			for i, c := range row.Cells {
				p(" %s |", cellStat(c.Stat, c.Has, g.Columns[i].Unit))
			}
			p("\n")
		}
	}

	p("\n## Every result\n\n")
	p("| Package | Benchmark | Unit | Median | ± | n |\n|---|---|---|---|---|---|\n")
	for _, b := range sortedBenchmarks(s) {
		for _, st := range b.Stats {
			p("| %s | %s | %s | %s | %s | %d |\n", cell(strings.TrimPrefix(b.Pkg, Module+"/")), cell(b.Name), cell(st.Unit),
				formatValue(st.Median, st.Unit), formatSpread(st), st.N)
		}
	}
	return bw.Flush()
}

// sortedBenchmarks orders benchmarks by package, keeping the run's order
// within a package.
func sortedBenchmarks(s *Summary) []*Benchmark {
	out := append([]*Benchmark(nil), s.Benchmarks...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Pkg < out[j].Pkg })
	return out
}

func environment(cfg map[string]string) string {
	var parts []string
	for _, k := range []string{"goos", "goarch", "cpu"} {
		if v := cfg[k]; v != "" {
			parts = append(parts, fmt.Sprintf("%s `%s`", k, v))
		}
	}
	return strings.Join(parts, ", ")
}

// unitSuffix names the unit in a headline row of a pair with several.
func unitSuffix(c Comparison) string {
	if len(c.Pair.Units) < 2 {
		return ""
	}
	return " — " + cell(c.Unit)
}

// cellStat renders a summary as "52.1 µs ±2% (n=6)", or "missing".
func cellStat(st Stat, ok bool, unit string) string {
	if !ok {
		return "missing"
	}
	return fmt.Sprintf("%s %s (n=%d)", formatValue(st.Median, unit), formatSpread(st), st.N)
}

func ratioCell(c Comparison) string {
	switch {
	case c.Pair.Reference.IsZero():
		return "—"
	case c.Missing() != "":
		return "missing"
	case math.IsNaN(c.Ratio):
		return "— (reference is 0)"
	case c.Ratio > 0 && c.Ratio < 0.001:
		return fmt.Sprintf("1/%s", groupThousands(math.Round(1/c.Ratio)))
	case c.Ratio > 0 && c.Ratio < 0.1:
		return fmt.Sprintf("%s× (1/%s)", formatNumber(c.Ratio), groupThousands(math.Round(1/c.Ratio)))
	}
	return formatNumber(c.Ratio) + "×"
}

func formatSpread(st Stat) string {
	sp := st.Spread()
	switch {
	case math.IsInf(sp, 1):
		return "±∞"
	case sp < 0.005:
		return "±0%"
	}
	return fmt.Sprintf("±%.0f%%", sp*100)
}

// formatValue renders v in unit for a reader: durations in ns, µs, ms or
// s, sizes in B, KiB or MiB, anything else as a number.
func formatValue(v float64, unit string) string {
	switch {
	case unit == unitNsPerOp || strings.HasPrefix(unit, "ns/") || strings.HasSuffix(unit, "-ns"):
		return formatDuration(v)
	case strings.HasSuffix(unit, "-µs") || strings.HasSuffix(unit, "-us") || strings.HasPrefix(unit, "µs/"):
		return formatDuration(v * 1e3)
	case strings.HasSuffix(unit, "-ms") || strings.HasPrefix(unit, "ms/"):
		return formatDuration(v * 1e6)
	case unit == "B/op" || strings.HasPrefix(unit, "bytes/") || strings.Contains(unit, "-bytes/"):
		return formatBytes(v)
	}
	return formatNumber(v)
}

func formatDuration(ns float64) string {
	a := math.Abs(ns)
	switch {
	case a < 1e3:
		return formatNumber(ns) + " ns"
	case a < 1e6:
		return formatNumber(ns/1e3) + " µs"
	case a < 1e9:
		return formatNumber(ns/1e6) + " ms"
	}
	return formatNumber(ns/1e9) + " s"
}

func formatBytes(b float64) string {
	a := math.Abs(b)
	switch {
	case a < 1<<10:
		return formatNumber(b) + " B"
	case a < 1<<20:
		return formatNumber(b/(1<<10)) + " KiB"
	}
	return formatNumber(b/(1<<20)) + " MiB"
}

// formatNumber gives three significant digits below 1000 and whole
// numbers with thousands separators above.
func formatNumber(v float64) string {
	if math.Abs(v) >= 1000 {
		return groupThousands(v)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

func groupThousands(v float64) string {
	s := strconv.FormatFloat(math.Round(math.Abs(v)), 'f', 0, 64)
	var b strings.Builder
	if v < 0 {
		b.WriteByte('-')
	}
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// cell escapes text for a Markdown table cell.
func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}
