package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func scenario(t *testing.T, name string) Scenario {
	t.Helper()
	for _, s := range Scenarios() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no scenario %s", name)
	return Scenario{}
}

func testResults(t *testing.T) []*Result {
	return []*Result{
		{Scenario: scenario(t, "raw"), Runs: []Measurement{{Events: 20000, Rate: 40000}, {Events: 20000, Rate: 50000}, {Events: 20000, Rate: 45000}}},
		{Scenario: scenario(t, "naive"), Runs: []Measurement{{Events: 20000, Rate: 250, Users: 1, Elapsed: 80 * time.Second, Exec: 160 * time.Second, ExecFrom: "client", Throttles: "client"}}},
		{Scenario: scenario(t, "drain"), Runs: []Measurement{{Events: 20000, Rate: 9000, RSS: 40 << 20}, {Events: 20000, Rate: 20000, RSS: 50 << 20}, {Events: 20000, Rate: 15000, RSS: 45 << 20}}},
		{Scenario: scenario(t, "realistic-1"), Runs: []Measurement{{Events: 280000, Rate: 770, Users: 1, Elapsed: 6 * time.Minute,
			Exec: time.Duration(0.95 * 4 * 360 * float64(time.Second)), ExecFrom: "emulator", Throttled: 3, Throttles: "emulator"}}},
		{Scenario: scenario(t, "realistic-2"), NA: errNoApps.Error()},
		{Scenario: scenario(t, "latency"), Runs: []Measurement{{Events: 46000, Rate: 385, HasLatency: true, P50: 300 * time.Millisecond, P99: 1200 * time.Millisecond}}},
		{Scenario: scenario(t, "memory"), Err: errors.New("worker-1 did not become healthy")},
	}
}

func TestTableTakesRatiosAndChecksGoals(t *testing.T) {
	tb := BuildTable(profiles["full"], testResults(t))
	rows := map[string]Row{}
	for _, r := range tb.Rows {
		rows[r.Name] = r
	}
	if r := rows["raw"]; r.Rate != 45000 || r.RateMin != 40000 || r.RateMax != 50000 {
		t.Errorf("raw: median %v (%v–%v), want 45000 (40000–50000)", r.Rate, r.RateMin, r.RateMax)
	}
	if r := rows["drain"]; !r.GoalMet || r.RSS != 50<<20 {
		t.Errorf("drain at 15000/s against raw 45000/s: goal met %v (want true: 0.33 ≥ 0.30), RSS %d (want the largest)", r.GoalMet, r.RSS)
	}
	if r := rows["realistic-1"]; !r.GoalMet || r.Ceiling < 0.94 || r.Ceiling > 0.96 {
		t.Errorf("realistic-1: ceiling %.3f (want 0.95), goal met %v", r.Ceiling, r.GoalMet)
	}
	// The ceiling spent on requests of one record each is not the goal: the records are.
	slow := testResults(t)
	slow[3].Runs[0].Rate = 100
	if r := BuildTable(profiles["full"], slow).Rows[3]; r.GoalMet {
		t.Errorf("realistic-1 at 100/s within the ceiling: goal met")
	}
	if r := rows["latency"]; r.GoalMet || !strings.Contains(r.Goal, "1200 ms") {
		t.Errorf("latency p99 1.2 s: goal %q met %v, want not met", r.Goal, r.GoalMet)
	}
	if r := rows["realistic-2"]; r.GoalMet || !strings.HasPrefix(r.Missing, "n/a") {
		t.Errorf("realistic-2 not run: missing %q, goal met %v", r.Missing, r.GoalMet)
	}
	if r := rows["memory"]; r.GoalMet || !strings.HasPrefix(r.Missing, "error") {
		t.Errorf("memory failed: missing %q, goal met %v", r.Missing, r.GoalMet)
	}
	cells := tb.cells(rows["drain"])
	if cells[3] != "15,000 (9,000–20,000)" || cells[4] != "0.33" || cells[5] != "60.00" {
		t.Errorf("drain cells = %q", cells)
	}
	if got := ratio(176, 42852); got != "0.0041" {
		t.Errorf("ratio far below 1 = %q, want 0.0041", got)
	}
	if cells := tb.cells(rows["naive"]); cells[9] != "50 % (c)" {
		t.Errorf("naive ceiling cell = %q, want 50 %% (c): 160 s of one user's 80 s × 4 s/s", cells[9])
	}
}

func TestMarkdownRowsHaveEveryColumn(t *testing.T) {
	var b bytes.Buffer
	BuildTable(profiles["quick"], testResults(t)).WriteMarkdown(&b)
	lines := strings.Split(b.String(), "\n")
	var table []string
	for _, l := range lines {
		if strings.HasPrefix(l, "|") {
			table = append(table, l)
		}
	}
	if len(table) != 2+len(testResults(t)) {
		t.Fatalf("%d table lines, want header, rule and %d rows:\n%s", len(table), len(testResults(t)), b.String())
	}
	for _, l := range table {
		if n := strings.Count(l, "|") - strings.Count(l, `\|`); n != len(header)+1 {
			t.Errorf("line has %d bars, want %d: %s", n, len(header)+1, l)
		}
	}
	if !strings.Contains(b.String(), "less than one 5-minute window") {
		t.Errorf("the quick profile's table does not say its realistic runs miss a window:\n%s", b.String())
	}
	if !strings.Contains(b.String(), "realistic-2: n/a: "+errNoApps.Error()) {
		t.Errorf("the footnotes do not say why realistic-2 was not run:\n%s", b.String())
	}
}
