package benchreport

import (
	"fmt"
	"math"
)

// Ref names a benchmark in a run.
type Ref struct {
	Pkg  string // import path
	Name string // BenchmarkName/sub, without -P
}

// IsZero reports whether r names nothing.
func (r Ref) IsZero() bool { return r.Pkg == "" && r.Name == "" }

func (r Ref) String() string { return r.Name }

// Pair is a figure of sandkey and the reference it is read against.
type Pair struct {
	Title     string
	Figure    Ref
	Reference Ref      // zero when the figure has no reference
	Units     []string // the units compared; each gives one Comparison
	Note      string   // what the reference is, for the reader
}

// Comparison is one unit of a Pair, as measured in a run.
type Comparison struct {
	Pair
	Unit string
	// Figure and Reference are the summaries; Has* tell whether the run
	// measured them at all.
	Figure, Reference       Stat
	HasFigure, HasReference bool
	// Ratio is Figure.Median / Reference.Median; NaN when either is
	// missing or the reference's median is 0.
	Ratio float64
}

// Missing describes what the run lacks for this comparison, or "".
func (c Comparison) Missing() string {
	switch {
	case !c.HasFigure:
		return fmt.Sprintf("%s (%s) not in this run", c.Pair.Figure.Name, c.Unit)
	case !c.Pair.Reference.IsZero() && !c.HasReference:
		return fmt.Sprintf("reference %s (%s) not in this run", c.Pair.Reference.Name, c.Unit)
	}
	return ""
}

// Compare measures every pair against s, one Comparison per unit.
func Compare(s *Summary, pairs []Pair) []Comparison {
	var out []Comparison
	for _, p := range pairs {
		for _, unit := range p.Units {
			c := Comparison{Pair: p, Unit: unit, Ratio: math.NaN()}
			c.Figure, c.HasFigure = lookupStat(s, p.Figure, unit)
			if !p.Reference.IsZero() {
				c.Reference, c.HasReference = lookupStat(s, p.Reference, unit)
			}
			if c.HasFigure && c.HasReference && c.Reference.Median != 0 {
				c.Ratio = c.Figure.Median / c.Reference.Median
			}
			out = append(out, c)
		}
	}
	return out
}

func lookupStat(s *Summary, r Ref, unit string) (Stat, bool) {
	b := s.Lookup(r.Pkg, r.Name)
	if b == nil {
		return Stat{}, false
	}
	return b.Stat(unit)
}
