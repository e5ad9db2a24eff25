// Command benchreport writes sandkey's benchmark report (Markdown, on
// stdout) from the raw output of `go test -bench`:
//
//	benchreport [-skip-malformed] [results.txt]
//
// It reads standard input when no file is named. Malformed result lines
// fail the report, naming each line, unless -skip-malformed is given; then
// they are listed on stderr and counted in the report. Exit codes: 0 done,
// 1 unreadable or malformed input, 2 bad usage.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/sandkey/sandkey/pkg/benchreport"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("benchreport", flag.ContinueOnError)
	fs.SetOutput(stderr)
	skip := fs.Bool("skip-malformed", false, "report the well-formed lines when some are malformed, instead of failing")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: benchreport [-skip-malformed] [results.txt] > REPORT.md")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 1 {
		fs.Usage()
		return 2
	}
	in, name := stdin, "standard input"
	if fs.NArg() == 1 {
		name = fs.Arg(0)
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(stderr, "benchreport: %v\n", err)
			return 1
		}
		defer f.Close()
		in = f
	}
	res, err := benchreport.Parse(in)
	src := benchreport.Source{File: name}
	var perr *benchreport.ParseError
	switch {
	case errors.As(err, &perr) && *skip:
		for _, le := range perr.Errs {
			fmt.Fprintf(stderr, "benchreport: %s: skipped %v\n", name, le)
		}
		src.Skipped = len(perr.Errs)
	case err != nil:
		fmt.Fprintf(stderr, "benchreport: %s: %v\n", name, err)
		if perr != nil {
			fmt.Fprintln(stderr, "benchreport: fix or rerun the benchmarks, or pass -skip-malformed to report the rest")
		}
		return 1
	}
	if len(res.Results) == 0 {
		fmt.Fprintf(stderr, "benchreport: %s holds no benchmark results; run make bench first\n", name)
		return 1
	}
	if err := benchreport.Write(stdout, benchreport.Summarize(res), benchreport.Sandkey(), src); err != nil {
		fmt.Fprintf(stderr, "benchreport: write report: %v\n", err)
		return 1
	}
	return 0
}
