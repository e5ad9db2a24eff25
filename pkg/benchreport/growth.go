package benchreport

// Growth lays out benchmarks measured at increasing loads, one row per
// load, so that how a figure grows reads down a column.
type Growth struct {
	Title   string
	Note    string
	Load    string // what a load counts: "sandboxes", "sessions"
	Loads   []int
	Columns []GrowthColumn
}

// GrowthColumn is one figure at every load of a Growth.
type GrowthColumn struct {
	Header string
	Pkg    string
	// Name returns the benchmark's name at load.
	Name func(load int) string
	Unit string
	// PerLoad divides the figure by the load: the cost per sandbox or per
	// session, constant when the growth is linear.
	PerLoad bool
}

// GrowthRow is one load of a Growth, as measured in a run.
type GrowthRow struct {
	Load  int
	Cells []GrowthCell // one per column
}

// GrowthCell is one column at one load.
type GrowthCell struct {
	Stat Stat // divided by the load when the column is PerLoad
	Has  bool
}

// Grow measures g against s.
func Grow(s *Summary, g Growth) []GrowthRow {
	rows := make([]GrowthRow, 0, len(g.Loads))
	for _, load := range g.Loads {
		row := GrowthRow{Load: load}
		for _, col := range g.Columns {
			st, ok := lookupStat(s, Ref{Pkg: col.Pkg, Name: col.Name(load)}, col.Unit)
			if ok && col.PerLoad && load > 0 {
				f := float64(load)
				st.Median, st.Min, st.Max = st.Median/f, st.Min/f, st.Max/f
			}
			row.Cells = append(row.Cells, GrowthCell{Stat: st, Has: ok})
		}
		rows = append(rows, row)
	}
	return rows
}
