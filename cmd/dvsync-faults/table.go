package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Result is the outcome of one scenario, one line of the table.
type Result struct {
	Scenario string
	Events   int // messages published
	Report   Report
	// Recovery is from the fault's end to the state being final; Recovered is false when it
	// never was (the deadline passed, or the consumers stopped moving with work left).
	Recovery  time.Duration
	Recovered bool
	// Budget, when set, is the longest recovery the scenario accepts.
	Budget time.Duration
	// Err is a failure of the suite itself (a process that would not start): not a verdict.
	Err error
	// Logs is where the scenario's process logs are.
	Logs string
	// Note says why a wait for the final state ended without every rule holding.
	Note string
	// Warnings are what the suite worked around (a process that exited while starting).
	Warnings []string
}

// Passed reports whether the scenario proved what it tests.
func (r Result) Passed() bool { return r.Err == nil && r.Report.OK() && r.Recovered && !r.overBudget() }

func (r Result) overBudget() bool { return r.Budget > 0 && r.Recovery > r.Budget }

func (r Result) recovery() string {
	switch {
	case r.Err != nil:
		return "-"
	case !r.Recovered:
		return ">" + strconv.Itoa(int(r.Recovery.Seconds()))
	}
	return strconv.FormatFloat(r.Recovery.Seconds(), 'f', 1, 64)
}

func (r Result) verdict() string {
	switch {
	case r.Err != nil:
		return "ERROR"
	case r.Passed():
		return "PASS"
	}
	return "FAIL"
}

// PrintTable writes the table of results, then every break of each failed scenario.
func PrintTable(w io.Writer, results []Result) {
	header := []string{"scenario", "events", "lost", "duplicated", "stale", "stuck", "ledger", "recovery s", "result"}
	rows := [][]string{header}
	for _, r := range results {
		rows = append(rows, []string{r.Scenario, strconv.Itoa(r.Events), strconv.Itoa(r.Report.Lost), strconv.Itoa(r.Report.Duplicated),
			strconv.Itoa(r.Report.Stale), strconv.Itoa(r.Report.Stuck), strconv.Itoa(r.Report.Ledger), r.recovery(), r.verdict()})
	}
	widths := make([]int, len(header))
	for _, row := range rows {
		for i, cell := range row {
			widths[i] = max(widths[i], len(cell))
		}
	}
	for _, row := range rows {
		// The scenario left-aligned, the numbers right-aligned.
		line := fmt.Sprintf("%-*s", widths[0], row[0])
		for i := 1; i < len(row); i++ {
			line += fmt.Sprintf("  %*s", widths[i], row[i])
		}
		fmt.Fprintln(w, line)
	}
	for _, r := range results {
		for _, warn := range r.Warnings {
			fmt.Fprintf(w, "\n%s: note: %s", r.Scenario, warn)
		}
	}
	for _, r := range results {
		if r.Passed() {
			continue
		}
		fmt.Fprintf(w, "\n%s: %s (logs: %s)\n", r.Scenario, r.verdict(), r.Logs)
		if r.Err != nil {
			fmt.Fprintf(w, "  suite error: %v\n", r.Err)
			continue
		}
		if r.Note != "" {
			fmt.Fprintf(w, "  %s\n", r.Note)
		}
		switch {
		case !r.Recovered:
			fmt.Fprintf(w, "  not final %s after the fault ended\n", r.Recovery.Round(time.Second))
		case r.overBudget():
			fmt.Fprintf(w, "  recovery took %s, more than the %s this scenario allows\n", r.Recovery.Round(time.Second), r.Budget)
		}
		for _, b := range r.Report.Breaks {
			fmt.Fprintf(w, "  %s: %d\n", b.Rule, b.Count)
			for _, ex := range b.Examples {
				fmt.Fprintf(w, "      %s\n", printable(ex))
			}
		}
	}
}

// maxExample bounds an example line: hostile keys run to kilobytes.
const maxExample = 240

// printable shows control characters in keys as escapes instead of letting them act on the
// terminal, and shortens long examples.
func printable(s string) string {
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if b.Len() >= maxExample {
			b.WriteString("...")
			break
		}
		if r < 0x20 || r == 0x7f {
			fmt.Fprintf(&b, `\x%02x`, r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
