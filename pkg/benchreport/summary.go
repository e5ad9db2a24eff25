package benchreport

import (
	"math"
	"slices"
)

// Key names a benchmark: its package's import path and its name without
// the -P suffix.
type Key struct {
	Pkg  string
	Name string
}

// Stat summarises the values of one unit over a benchmark's runs.
type Stat struct {
	Unit   string
	N      int // runs that measured this unit
	Median float64
	Min    float64
	Max    float64
}

// Spread is the largest distance from the median to the minimum or the
// maximum, as a fraction of the median: 0.03 means no run was more than 3%
// away. It is +Inf when the median is 0 and the values are not all 0.
func (s Stat) Spread() float64 {
	d := math.Max(s.Max-s.Median, s.Median-s.Min)
	switch {
	case d == 0:
		return 0
	case s.Median == 0:
		return math.Inf(1)
	}
	return d / math.Abs(s.Median)
}

// Benchmark is one benchmark's summary over its runs.
type Benchmark struct {
	Key
	Procs int
	Runs  int    // result lines
	Stats []Stat // units in the order first seen
}

// Stat returns the summary of unit.
func (b *Benchmark) Stat(unit string) (Stat, bool) {
	for _, s := range b.Stats {
		if s.Unit == unit {
			return s, true
		}
	}
	return Stat{}, false
}

// Summary is a run's benchmarks, each summarised over its -count runs.
type Summary struct {
	Config     map[string]string
	Benchmarks []*Benchmark // in the order first seen
	byKey      map[Key]*Benchmark
}

// Lookup returns the benchmark pkg.name, or nil.
func (s *Summary) Lookup(pkg, name string) *Benchmark {
	return s.byKey[Key{Pkg: pkg, Name: name}]
}

// Summarize groups run's results by benchmark and unit and summarises
// each group by its median, minimum and maximum.
func Summarize(run *Run) *Summary {
	s := &Summary{Config: run.Config, byKey: map[Key]*Benchmark{}}
	values := map[Key]map[string][]float64{}
	for _, r := range run.Results {
		k := Key{Pkg: r.Pkg, Name: r.Name}
		b := s.byKey[k]
		if b == nil {
			b = &Benchmark{Key: k, Procs: r.Procs}
			s.byKey[k] = b
			s.Benchmarks = append(s.Benchmarks, b)
			values[k] = map[string][]float64{}
		}
		b.Runs++
		for _, v := range r.Values {
			if _, ok := values[k][v.Unit]; !ok {
				b.Stats = append(b.Stats, Stat{Unit: v.Unit})
			}
			values[k][v.Unit] = append(values[k][v.Unit], v.Value)
		}
	}
	for _, b := range s.Benchmarks {
		for i := range b.Stats {
			vs := values[b.Key][b.Stats[i].Unit]
			slices.Sort(vs)
			b.Stats[i].N = len(vs)
			b.Stats[i].Median = median(vs)
			b.Stats[i].Min, b.Stats[i].Max = vs[0], vs[len(vs)-1]
		}
	}
	return s
}

// median of sorted, non-empty vs.
func median(vs []float64) float64 {
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}
