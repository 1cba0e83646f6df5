package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Result is every run of one scenario.
type Result struct {
	Scenario Scenario
	Runs     []Measurement
	Err      error  // the bench itself failed (a process would not start, a drain stalled)
	NA       string // why the scenario cannot run against this checkout
}

// Failed reports whether the bench could not measure the scenario.
func (r *Result) Failed() bool { return r.Err != nil }

func (r *Result) median(f func(Measurement) float64) float64 {
	v := make([]float64, len(r.Runs))
	for i, m := range r.Runs {
		v[i] = f(m)
	}
	return median(v)
}

// Row is one scenario's line of the table: medians over its runs.
type Row struct {
	Name             string
	Runs             int
	Sustained        time.Duration // set for a scenario run once for a duration
	Events           int
	Rate             float64
	RateMin, RateMax float64
	HasLatency       bool
	P50, P99         time.Duration
	RSS              int64
	HasCeiling       bool
	Ceiling          float64
	CeilingFrom      string
	Throttled        int64
	Throttles        string
	Notes            []string
	Missing          string // "n/a: …" or "error: …" when nothing was measured
	Goal             string
	GoalMet          bool
	HasGoal          bool
}

// Table is the benchmark's result.
type Table struct {
	Profile Profile
	Rows    []Row
	// The rates the ratios are taken against, measured in the same run (0: not measured).
	raw, naive, oneUser float64
}

// BuildTable reduces the results to their rows and checks the goals.
func BuildTable(p Profile, results []*Result) *Table {
	t := &Table{Profile: p}
	for _, res := range results {
		row := Row{Name: res.Scenario.Name, Runs: len(res.Runs)}
		switch {
		case res.Err != nil:
			row.Missing = "error: " + res.Err.Error()
		case res.NA != "":
			row.Missing = "n/a: " + res.NA
		case len(res.Runs) == 0:
			row.Missing = "n/a: not run"
		}
		if len(res.Runs) > 0 {
			rates := make([]float64, len(res.Runs))
			for i, m := range res.Runs {
				rates[i] = m.Rate
			}
			row.Rate, row.RateMin, row.RateMax = median(rates), slices.Min(rates), slices.Max(rates)
			row.Events = int(res.median(func(m Measurement) float64 { return float64(m.Events) }))
			first := res.Runs[0]
			if !res.Scenario.Fast {
				row.Sustained = first.Elapsed
			}
			if first.HasLatency {
				row.HasLatency = true
				row.P50 = time.Duration(res.median(func(m Measurement) float64 { return float64(m.P50) }))
				row.P99 = time.Duration(res.median(func(m Measurement) float64 { return float64(m.P99) }))
			}
			for _, m := range res.Runs {
				row.RSS = max(row.RSS, m.RSS)
				for _, n := range m.Notes {
					if !slices.Contains(row.Notes, n) {
						row.Notes = append(row.Notes, n)
					}
				}
			}
			if first.ExecFrom != "" {
				row.HasCeiling, row.CeilingFrom = true, first.ExecFrom
				row.Ceiling = res.median(Measurement.ceiling)
			}
			if first.Throttles != "" {
				row.Throttles = first.Throttles
				row.Throttled = int64(res.median(func(m Measurement) float64 { return float64(m.Throttled) }))
			}
		}
		switch row.Name {
		case "raw":
			t.raw = row.Rate
		case "naive":
			t.naive = row.Rate
		case "realistic-1":
			t.oneUser = row.Rate
		}
		t.Rows = append(t.Rows, row)
	}
	for i, res := range results {
		if res.Scenario.Goal != nil {
			row := &t.Rows[i]
			row.HasGoal = true
			row.Goal, row.GoalMet = res.Scenario.Goal(*row, t)
			if row.Missing != "" {
				row.GoalMet = false
			}
		}
	}
	return t
}

var header = []string{"scenario", "runs", "events", "events/s", "× raw", "× naive", "p50", "p99", "peak RSS", "exec ceiling", "429s", "goal"}

// cells are a row's columns.
func (t *Table) cells(r Row) []string {
	runs := strconv.Itoa(r.Runs)
	if r.Sustained > 0 {
		runs = fmt.Sprintf("%d (%s)", r.Runs, r.Sustained.Round(time.Second))
	}
	goal := "—"
	if r.HasGoal {
		verdict := "not met"
		switch {
		case r.Missing != "":
			verdict = "n/a"
		case r.GoalMet:
			verdict = "met"
		}
		goal = r.Goal + ": " + verdict
	}
	if r.Missing != "" {
		word, _, _ := strings.Cut(r.Missing, ":")
		return []string{r.Name, runs, "—", word, "—", "—", "—", "—", "—", "—", "—", goal}
	}
	rate := thousands(r.Rate)
	if r.Runs > 1 {
		rate += fmt.Sprintf(" (%s–%s)", thousands(r.RateMin), thousands(r.RateMax))
	}
	vsRaw, vsNaive := ratio(r.Rate, t.raw), ratio(r.Rate, t.naive)
	if r.Name == "raw" {
		vsRaw = "1"
	}
	if r.Name == "naive" {
		vsNaive = "1"
	}
	p50, p99 := "—", "—"
	if r.HasLatency {
		p50, p99 = ms(r.P50), ms(r.P99)
	}
	ceiling := "—"
	if r.HasCeiling {
		ceiling = fmt.Sprintf("%.0f %%", 100*r.Ceiling)
		if r.CeilingFrom == "client" {
			ceiling += " (c)"
		}
	}
	throttled := "—"
	if r.Throttles != "" {
		throttled = strconv.FormatInt(r.Throttled, 10)
		if r.Throttles == "client" {
			throttled += " (c)"
		}
	}
	return []string{r.Name, runs, thousands(float64(r.Events)), rate, vsRaw, vsNaive, p50, p99, mb(r.RSS), ceiling, throttled, goal}
}

// footnotes explain the table.
func (t *Table) footnotes() []string {
	notes := []string{
		"events/s: the median of the runs (min–max); a drain is timed from its first acknowledgement to its last.",
		"× raw, × naive: against the baselines measured in this run. p50/p99: publish → row written (latency scenario only).",
		"exec ceiling: Dataverse execution time spent per second, over the users' 4 s each (20 min per 5-minute window).",
		"(c): counted by the client (the workers' request durations and 429s, the pipe's), where the emulator does not count them per user.",
	}
	if !t.Profile.coversWindow() {
		notes = append(notes, fmt.Sprintf("profile %s: the realistic runs last %s, less than one 5-minute window, so the window's unspent budget flatters them.",
			t.Profile.Name, t.Profile.Sustained))
	}
	for _, r := range t.Rows {
		if r.Missing != "" {
			notes = append(notes, r.Name+": "+strings.ReplaceAll(r.Missing, "\n", " "))
		}
		if len(r.Notes) > 0 {
			notes = append(notes, r.Name+": "+strings.Join(r.Notes, "; "))
		}
	}
	return notes
}

// WriteText writes the table aligned for a terminal.
func (t *Table) WriteText(w io.Writer) {
	rows := [][]string{header}
	for _, r := range t.Rows {
		rows = append(rows, t.cells(r))
	}
	widths := make([]int, len(header))
	for _, row := range rows {
		for i, c := range row {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	for _, row := range rows {
		var b strings.Builder
		for i, c := range row {
			pad := strings.Repeat(" ", widths[i]-len([]rune(c)))
			switch {
			case i == 0 || i == len(row)-1: // names and goals left-aligned, numbers right-aligned
				b.WriteString(c + pad)
			default:
				b.WriteString(pad + c)
			}
			if i < len(row)-1 {
				b.WriteString("  ")
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	fmt.Fprintln(w)
	for _, n := range t.footnotes() {
		fmt.Fprintln(w, n)
	}
}

// WriteMarkdown writes the table as Markdown, for the README.
func (t *Table) WriteMarkdown(w io.Writer) {
	fmt.Fprintln(w, "| "+strings.Join(header, " | ")+" |")
	align := make([]string, len(header))
	for i := range align {
		align[i] = "---:"
	}
	align[0], align[len(align)-1] = "---", "---"
	fmt.Fprintln(w, "|"+strings.Join(align, "|")+"|")
	for _, r := range t.Rows {
		cells := t.cells(r)
		for i, c := range cells {
			cells[i] = strings.ReplaceAll(c, "|", `\|`)
		}
		fmt.Fprintln(w, "| "+strings.Join(cells, " | ")+" |")
	}
	fmt.Fprintln(w)
	for _, n := range t.footnotes() {
		fmt.Fprintln(w, "- "+n)
	}
}

// ratio is v/base to two significant digits (at least two decimals): a ratio far below 1 still
// shows how far.
func ratio(v, base float64) string {
	if base <= 0 || v <= 0 {
		return "—"
	}
	r := v / base
	if r >= 0.1 {
		return fmt.Sprintf("%.2f", r)
	}
	return strconv.FormatFloat(r, 'g', 2, 64)
}

func ms(d time.Duration) string {
	if d <= 0 {
		return "—"
	}
	return fmt.Sprintf("%d ms", d.Milliseconds())
}

func mb(b int64) string {
	if b <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f MB", float64(b)/(1<<20))
}

// thousands writes a rate rounded to a whole number with thousands separators.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
