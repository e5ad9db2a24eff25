// Package benchreport turns the raw output of `go test -bench` into
// sandkey's benchmark report, bench/REPORT.md: every figure beside the
// reference measured in the same run, the ratio of the two, and how the
// figures grow with load.
//
// The algorithm, in the order the code runs it:
//
//  1. Parse (parse.go) reads the output line by line, in the Go benchmark
//     data format: "key: value" configuration lines (pkg: names the
//     package of the results that follow) and result lines
//     "BenchmarkName-P  iterations  value unit  value unit ...". Every
//     other line (PASS, ok, logs) is ignored. A line that starts like a
//     result but does not parse as one (no iteration count, a value
//     without its unit, a value that is not a finite number) is a
//     LineError naming the line and what is wrong; Parse returns every
//     result it could read and one ParseError listing every bad line.
//  2. Summarize (summary.go) groups the results of the -count runs by
//     package, name and unit, and keeps their median, minimum and maximum.
//     The spread is the largest distance from the median to either end, as
//     a fraction of the median: "±3%" says no run was further than 3% from
//     the median.
//  3. Compare (pairs.go) puts each figure beside its reference (minting
//     beside the raw Ed25519 signature, the sweep beside minting the same
//     count of tokens, the token source beside raw inotify and beside
//     client-go's cached file token source) and divides the medians:
//     ratio = figure / reference, in the same unit.
//  4. Grow (growth.go) lays out one benchmark at increasing loads (the
//     rotation sweep at 100, 1,000 and 10,000 sandboxes; sessions at 100,
//     1,000 and 10,000) with the cost per sandbox, so linear growth reads
//     as a constant column.
//  5. Write (report.go) renders the Markdown: the headline table first,
//     then the pairs, the growth tables, and every result.
//
// A figure or reference missing from the run (a benchmark skipped, an
// engine absent) is shown as missing, never guessed.
package benchreport
