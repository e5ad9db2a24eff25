package benchreport

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxLineLength caps one line of benchmark output; a longer line is a
// LineError and the rest of it is skipped.
const MaxLineLength = 64 << 10

// maxLineErrors caps the errors one ParseError lists in its message.
const maxLineErrors = 20

// Value is one measurement of a result line: 1234 ns/op.
type Value struct {
	Value float64
	Unit  string
}

// Result is one benchmark result line.
type Result struct {
	Pkg        string // the import path of the last "pkg:" line, "" before any
	Name       string // BenchmarkName/sub, without the -P suffix
	Procs      int    // the -P suffix (GOMAXPROCS); 1 when absent
	Iterations int64
	Values     []Value // in the order of the line
	Line       int     // 1-based line number in the input
}

// Run is everything Parse read from one output.
type Run struct {
	// Config holds the configuration lines (goos, goarch, cpu, ...), the
	// first value of each key; pkg lines are not kept here.
	Config  map[string]string
	Results []Result
}

// LineError is one line that looks like a benchmark result but is not one.
type LineError struct {
	Line int    // 1-based
	Text string // the line, shortened
	Err  error
}

func (e *LineError) Error() string {
	return fmt.Sprintf("line %d: %v: %q", e.Line, e.Err, e.Text)
}

func (e *LineError) Unwrap() error { return e.Err }

// ParseError lists every malformed line of an input.
type ParseError struct {
	Errs []*LineError
}

func (e *ParseError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d malformed benchmark line(s)", len(e.Errs))
	for i, le := range e.Errs {
		if i == maxLineErrors {
			fmt.Fprintf(&b, "; and %d more", len(e.Errs)-maxLineErrors)
			break
		}
		b.WriteString("; ")
		b.WriteString(le.Error())
	}
	return b.String()
}

// Errors a LineError wraps.
var (
	ErrLineTooLong   = fmt.Errorf("line longer than %d bytes", MaxLineLength)
	ErrIterations    = errors.New("iteration count is not a positive integer")
	ErrMissingUnit   = errors.New("value without a unit")
	ErrBadValue      = errors.New("value is not a finite number")
	ErrDuplicateUnit = errors.New("unit measured twice on one line")
	ErrNoValues      = errors.New("iteration count without any measurement")
)

// Parse reads Go benchmark output. It returns every result it could
// read; when some lines were malformed, the error is a *ParseError
// listing them. A read error ends parsing and is returned as is.
func Parse(r io.Reader) (*Run, error) {
	run := &Run{Config: map[string]string{}}
	var bad []*LineError
	br := bufio.NewReader(r)
	pkg := ""
	for lineNo := 1; ; lineNo++ {
		line, tooLong, err := readLine(br)
		if err != nil && !errors.Is(err, io.EOF) {
			return run, fmt.Errorf("read benchmark output at line %d: %w", lineNo, err)
		}
		if tooLong {
			bad = append(bad, &LineError{Line: lineNo, Text: shorten(line), Err: ErrLineTooLong})
		} else if len(line) > 0 {
			switch res, isResult, perr := parseResult(line); {
			case perr != nil:
				bad = append(bad, &LineError{Line: lineNo, Text: shorten(line), Err: perr})
			case isResult:
				res.Pkg, res.Line = pkg, lineNo
				run.Results = append(run.Results, res)
			default:
				if k, v, ok := parseConfig(line); ok {
					if k == "pkg" {
						pkg = v
					} else if _, seen := run.Config[k]; !seen {
						run.Config[k] = v
					}
				}
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
	}
	if len(bad) > 0 {
		return run, &ParseError{Errs: bad}
	}
	return run, nil
}

// readLine returns the next line without its end. A line over
// MaxLineLength is consumed to its end and returned cut, with tooLong.
func readLine(br *bufio.Reader) (line string, tooLong bool, err error) {
	var b []byte
	total := 0
	for {
		chunk, err := br.ReadSlice('\n')
		total += len(chunk)
		if keep := MaxLineLength + 2 - len(b); keep > 0 {
			b = append(b, chunk[:min(len(chunk), keep)]...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if n := len(chunk); n > 0 && chunk[n-1] == '\n' {
			total--
		}
		// Up to MaxLineLength+1 bytes, b holds the whole line and its end.
		if t := trimEOL(b); total <= MaxLineLength+1 && len(t) <= MaxLineLength {
			return string(t), false, err
		}
		return string(b[:MaxLineLength]), true, err
	}
}

func trimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b
}

// parseResult parses a result line. isResult is false, with no error,
// for lines that are not results: anything not starting with a benchmark
// name, and a name alone (the announcement Go prints before a
// benchmark's log output).
func parseResult(line string) (res Result, isResult bool, err error) {
	fields := strings.Fields(line)
	if len(fields) < 2 || !isBenchmarkName(fields[0]) {
		return Result{}, false, nil
	}
	res.Name, res.Procs = splitProcs(fields[0])
	n, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil || n < 1 {
		return Result{}, false, fmt.Errorf("%w: %q", ErrIterations, fields[1])
	}
	res.Iterations = n
	rest := fields[2:]
	if len(rest) == 0 {
		return Result{}, false, ErrNoValues
	}
	if len(rest)%2 != 0 {
		return Result{}, false, fmt.Errorf("%w: %q", ErrMissingUnit, rest[len(rest)-1])
	}
	seen := map[string]bool{}
	for i := 0; i < len(rest); i += 2 {
		v, err := strconv.ParseFloat(rest[i], 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return Result{}, false, fmt.Errorf("%w: %q (unit %s)", ErrBadValue, rest[i], rest[i+1])
		}
		unit := rest[i+1]
		if seen[unit] {
			return Result{}, false, fmt.Errorf("%w: %s", ErrDuplicateUnit, unit)
		}
		seen[unit] = true
		res.Values = append(res.Values, Value{Value: v, Unit: unit})
	}
	return res, true, nil
}

// isBenchmarkName reports whether s is "Benchmark" followed by nothing or
// by a character that is not a lower-case letter (as `go test` requires).
func isBenchmarkName(s string) bool {
	rest, ok := strings.CutPrefix(s, "Benchmark")
	if !ok {
		return false
	}
	if rest == "" {
		return true
	}
	r, _ := utf8.DecodeRuneInString(rest)
	return !unicode.IsLower(r)
}

// splitProcs splits "BenchmarkX/y-8" into "BenchmarkX/y" and 8. A name
// without a numeric suffix ran with GOMAXPROCS=1.
func splitProcs(name string) (string, int) {
	i := strings.LastIndexByte(name, '-')
	if i < 0 || i == len(name)-1 {
		return name, 1
	}
	p, err := strconv.Atoi(name[i+1:])
	if err != nil || p < 1 || name[i+1] == '+' {
		return name, 1
	}
	return name[:i], p
}

// parseConfig parses "key: value", where key starts with a lower-case
// letter and holds no space or upper-case letter.
func parseConfig(line string) (key, value string, ok bool) {
	key, value, ok = strings.Cut(line, ":")
	if !ok || key == "" {
		return "", "", false
	}
	for i, r := range key {
		if (i == 0 && !unicode.IsLower(r)) || unicode.IsSpace(r) || unicode.IsUpper(r) {
			return "", "", false
		}
	}
	if value != "" && !strings.HasPrefix(value, " ") && !strings.HasPrefix(value, "\t") {
		return "", "", false
	}
	return key, strings.TrimSpace(value), true
}

// shorten cuts a line for an error message.
func shorten(s string) string {
	const max = 120
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
