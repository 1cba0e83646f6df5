package main

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/events"
	"github.com/dvsync/dvsync/internal/testbed"
)

func v(n int64) *int64 { return &n }

// healthy is a final state in which every rule holds: C1 and C2 synced at their newest version,
// C3 waits for its currency with an open error keeping its newest change, the bad message stored.
func healthyState() (Expect, Snapshot) {
	e := Expect{
		Newest:  map[string]int64{"C1": 3, "C2": 2, "C3": 4},
		Waiting: map[string]bool{"C3": true},
		Bad:     []BadMessage{{Name: "not JSON #0", Seq: 17}},
	}
	s := Snapshot{
		Rows: []Row{{ID: "r1", Number: "C1", Name: "C1 v3"}, {ID: "r2", Number: "C2", Name: "C2 v2"}},
		Couplings: map[string]Coupling{
			"customer/C1": {Version: 3, Status: "synced"}, "customer/C2": {Version: 2, Status: "synced"},
			"customer/C3": {Version: -1, Status: "failed", Skipped: true, LastErrorKind: "dependency_not_coupled"},
		},
		Errors: []LedgerError{
			{ID: 1, Kind: "dependency_not_coupled", Table: "customer", Key: "C3", Status: "open", EventVersion: v(4)},
			{ID: 2, Kind: "invalid_event", Table: "customer", Key: "seq:17", Status: "open", Seq: 17},
			{ID: 3, Kind: "dependency_not_coupled", Table: "customer", Key: "C1", Status: "resolved", EventVersion: v(1)},
		},
		Backlogs: []Backlog{{Consumer: "dvsync-worker"}, {Consumer: "dvsync-projector"}},
	}
	return e, s
}

func TestCheckPassesAHealthyState(t *testing.T) {
	e, s := healthyState()
	if r := Check(e, s); !r.OK() {
		t.Fatalf("breaks in a healthy state: %+v", r.Breaks)
	}
}

func rules(r Report) []string {
	var out []string
	for _, b := range r.Breaks {
		out = append(out, b.Rule)
	}
	return out
}

func TestCheckCountsLostDuplicatedStale(t *testing.T) {
	e, s := healthyState()
	s.Rows = []Row{
		{ID: "r2", Number: "C2", Name: "C2 v1"}, // stale: a late write of v1 landed after v2
		{ID: "r9", Number: "C2", Name: "C2 v2"}, // and a second row of the same record
	} // C1 has no row
	s.Couplings["customer/C2"] = Coupling{Version: 2, Status: "synced"}
	r := Check(e, s)
	if r.Lost != 1 || r.Duplicated != 1 || r.Stale != 1 {
		t.Fatalf("lost %d, duplicated %d, stale %d; want 1, 1, 1 (%v)", r.Lost, r.Duplicated, r.Stale, rules(r))
	}
	if r.OK() {
		t.Fatal("a broken state passes")
	}
	stale := r.Breaks[2]
	if stale.Rule != RuleStaleOverwritten || !strings.Contains(stale.Examples[0], `row says "C2 v1", newest v2, coupling synced at v2`) {
		t.Fatalf("the stale example does not say what the row and the coupling hold: %+v", stale)
	}
}

func TestCheckTellsTheKindsOfStaleApart(t *testing.T) {
	e, s := healthyState()
	s.Rows[0].Name = "C1 v2"
	for _, c := range []struct {
		coupling Coupling
		rule     string
	}{
		{Coupling{Version: 3, Status: "synced"}, RuleStaleOverwritten}, // the coupling says v3 landed, the row says v2
		{Coupling{Version: 2, Status: "synced"}, RuleStaleDropped},     // v2 synced as if it were the newest
		{Coupling{Version: 2, Status: "failed"}, RuleStale},
	} {
		s.Couplings["customer/C1"] = c.coupling
		r := Check(e, s)
		if r.Stale != 1 || len(r.Breaks) != 1 || r.Breaks[0].Rule != c.rule {
			t.Errorf("coupling %+v: stale %d, rules %v; want %q", c.coupling, r.Stale, rules(r), c.rule)
		}
	}
}

func TestCheckFindsAnOpenErrorKeepingAnOlderChange(t *testing.T) {
	e, s := healthyState()
	s.Errors[0].EventVersion = v(3) // v3 arrived after v4 and overwrote it
	r := Check(e, s)
	if len(r.Breaks) != 1 || r.Breaks[0].Rule != RuleOlderKept || r.Ledger != 1 {
		t.Fatalf("breaks %v, ledger %d; want only %q", rules(r), r.Ledger, RuleOlderKept)
	}
	if !strings.Contains(r.Breaks[0].Examples[0], "keeps v3, newest is v4") {
		t.Fatalf("example %q", r.Breaks[0].Examples[0])
	}

	s.Errors = s.Errors[1:] // no error at all for the waiting record
	if r := Check(e, s); len(r.Breaks) != 1 || r.Breaks[0].Rule != RuleWaitingError {
		t.Fatalf("breaks %v; want only %q", rules(r), RuleWaitingError)
	}
}

func TestCheckFindsAnErrorOpenForASyncedRecord(t *testing.T) {
	e, s := healthyState()
	s.Errors[2].Status = "open"
	r := Check(e, s)
	if len(r.Breaks) != 1 || r.Breaks[0].Rule != RuleOpenForSynced {
		t.Fatalf("breaks %v; want only %q", rules(r), RuleOpenForSynced)
	}
	s.Errors[2].Status = "replayed" // a replay that never settled is as open
	if r := Check(e, s); len(r.Breaks) != 1 || r.Breaks[0].Rule != RuleOpenForSynced {
		t.Fatalf("breaks %v; want only %q", rules(r), RuleOpenForSynced)
	}
	// A record that never synced is lost, and its open error says why: not a second break.
	s.Rows = s.Rows[1:]
	s.Couplings["customer/C1"] = Coupling{Version: -1, Status: "failed", LastErrorKind: "dependency_not_coupled"}
	if r := Check(e, s); len(r.Breaks) != 1 || r.Breaks[0].Rule != RuleLost || r.Ledger != 0 {
		t.Fatalf("breaks %v, ledger %d; want only %q", rules(r), r.Ledger, RuleLost)
	}
}

func TestCheckFindsBadMessagesBySequenceKeyOrID(t *testing.T) {
	e, s := healthyState()
	e.Bad = append(e.Bad,
		BadMessage{Name: "by key", Key: "P-LONG", Seq: 40},
		BadMessage{Name: "by id", ID: "ev-9", Seq: 41},
		BadMessage{Name: "by occurrence", Seq: 42},
		BadMessage{Name: "NUL in the key #0", Key: "P-NUL\x00", ID: "x", Seq: 43},
		BadMessage{Name: "NUL in the key #1", Key: "P-NUL\x001", ID: "y", Seq: 44})
	s.Errors = append(s.Errors,
		LedgerError{ID: 4, Kind: "dependency_not_coupled", Table: "customer", Key: "P-LONG", Status: "open", Seq: 99},
		LedgerError{ID: 5, Kind: "invalid_event", Table: "customer", Key: "other", EventID: "ev-9", Status: "open"})
	s.OccurrenceSeqs = map[uint64]bool{42: true}
	r := Check(e, s)
	if len(r.Breaks) != 1 || r.Breaks[0].Rule != RuleUnledgered || r.Breaks[0].Count != 2 || r.Ledger != 2 {
		t.Fatalf("breaks %+v; want two unledgered messages", r.Breaks)
	}
	if len(r.Breaks[0].Examples) != 1 || r.Breaks[0].Examples[0] != "NUL in the key: 2 of 2 (first at stream seq 43)" {
		t.Fatalf("example %q", r.Breaks[0].Examples[0])
	}
}

func TestCheckFindsTransientSkipsBacklogsAndExits(t *testing.T) {
	e, s := healthyState()
	s.Couplings["customer/C9"] = Coupling{Status: "failed", Skipped: true, LastErrorKind: string(domain.KindThrottled)}
	s.Errors = append(s.Errors, LedgerError{ID: 7, Kind: string(domain.KindDataverseUnavailable), Table: "customer", Key: "C9", Status: "open"})
	s.Backlogs[0].AckPending = 3
	s.Backlogs[1].Pending = 2
	s.Exited = []string{"worker-1 (signal: segmentation fault)"}
	r := Check(e, s)
	if r.Stuck != 5 {
		t.Fatalf("stuck %d, want 5", r.Stuck)
	}
	want := []string{RuleTransient, RuleBacklog, RuleExited}
	if got := rules(r); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("rules %v, want %v", got, want)
	}
	if r.Breaks[0].Count != 2 || r.Ledger != 2 {
		t.Fatalf("transient breaks %d, ledger %d; want 2, 2", r.Breaks[0].Count, r.Ledger)
	}
}

func TestMergeKeepsTheEarlierBreaksAndTheFinalCounts(t *testing.T) {
	mid := Report{Ledger: 2, Breaks: []Break{{Rule: RuleOlderKept, Count: 2}, {Rule: RuleBacklog, Count: 1}}, Stuck: 4}
	final := Report{Stale: 2, Breaks: []Break{{Rule: RuleStale, Count: 2}, {Rule: RuleBacklog, Count: 1}}, Stuck: 1}
	m := Merge(mid, final)
	if m.Stale != 2 || m.Ledger != 2 || m.Stuck != 4 {
		t.Fatalf("merged counts %+v", m)
	}
	want := []string{RuleStale, RuleBacklog, midPrefix + RuleOlderKept}
	if got := rules(m); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("rules %v, want %v", got, want)
	}
	if len(final.Breaks) != 2 {
		t.Fatal("Merge changed its argument")
	}
}

func TestFingerprintChangesWithTheState(t *testing.T) {
	_, s := healthyState()
	a := Fingerprint(s)
	if Fingerprint(s) != a {
		t.Fatal("the fingerprint of one state differs")
	}
	s.Backlogs[0].AckPending = 1
	if Fingerprint(s) == a {
		t.Fatal("a consumer's backlog does not change the fingerprint")
	}
}

func TestPrintTable(t *testing.T) {
	e, s := healthyState()
	s.Rows[0].Name = "C1 v2"
	broken := Check(e, s)
	var out bytes.Buffer
	PrintTable(&out, []Result{
		{Scenario: "baseline", Events: 12, Recovered: true, Recovery: 1500_000_000},
		{Scenario: "late-writes", Events: 12, Report: broken, Recovered: true, Recovery: 2_000_000_000, Logs: "/tmp/x"},
		{Scenario: "worker-kill9", Events: 12, Recovered: true, Recovery: 125_000_000_000, Budget: 60_000_000_000},
		{Scenario: "poison-flood", Events: 12, Report: Report{Stuck: 1, Breaks: []Break{{Rule: RuleUnledgered, Count: 1,
			Examples: []string{"key P-\x1b[31m-" + strings.Repeat("k", 500)}}}}, Recovery: 90_000_000_000},
	})
	lines := strings.Split(out.String(), "\n")
	header := strings.Fields(lines[0])
	if strings.Join(header, " ") != "scenario events lost duplicated stale stuck ledger recovery s result" {
		t.Fatalf("header %q", lines[0])
	}
	for i, want := range [][]string{
		{"baseline", "12", "0", "0", "0", "0", "0", "1.5", "PASS"},
		{"late-writes", "12", "0", "0", "1", "0", "0", "2.0", "FAIL"},
		{"worker-kill9", "12", "0", "0", "0", "0", "0", "125.0", "FAIL"},
		{"poison-flood", "12", "0", "0", "0", "1", "0", ">90", "FAIL"},
	} {
		if got := strings.Fields(lines[i+1]); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("row %d: %q, want %q", i, got, want)
		}
	}
	text := out.String()
	for _, want := range []string{
		"late-writes: FAIL (logs: /tmp/x)",
		`customer/C1: row says "C1 v2", newest v3`,
		"recovery took 2m5s, more than the 1m0s this scenario allows",
		"not final 1m30s after the fault ended",
		`key P-\x1b[31m-kkk`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "\x1b") || strings.Contains(text, strings.Repeat("k", 300)) {
		t.Error("an example reaches the terminal raw or whole")
	}
	if strings.Contains(text, "baseline: PASS") {
		t.Error("a passing scenario is detailed")
	}
}

func TestPlanPublishesEveryVersionInRoundsWithSomeOutOfOrder(t *testing.T) {
	p := NewPlan("t", 7, 30, 4)
	if len(p.Good) != 120 || len(p.Newest) != 30 {
		t.Fatalf("%d messages for %d records", len(p.Good), len(p.Newest))
	}
	seen := map[string]int64{} // newest version published so far
	outOfOrder := map[string]bool{}
	for _, m := range p.Good {
		ev, f := events.Decode(m.Subject, nil, m.Data)
		if f != nil {
			t.Fatalf("the suite's own event does not decode: %v", f)
		}
		if ev.ID != m.MsgID {
			t.Fatalf("message id %q is not the CloudEvent id %q", m.MsgID, ev.ID)
		}
		if want := ev.Key + " v" + itoa(ev.Version); ev.Fields["displayName"] != want {
			t.Fatalf("displayName %v, want %q", ev.Fields["displayName"], want)
		}
		if ev.Version < seen[ev.Key] {
			outOfOrder[ev.Key] = true
		}
		seen[ev.Key] = max(seen[ev.Key], ev.Version)
		if cur := ev.Fields["currencyCode"]; (cur == lateCurrency) != p.Waiting[ev.Key] {
			t.Fatalf("%s has currency %v, waiting %t", ev.Key, cur, p.Waiting[ev.Key])
		}
	}
	for key, newest := range p.Newest {
		if seen[key] != newest || newest != 4 {
			t.Fatalf("%s: newest published %d, planned %d", key, seen[key], newest)
		}
	}
	if len(outOfOrder) != 10 || !outOfOrder[customerKey(3)] || !outOfOrder[customerKey(0)] {
		t.Fatalf("out of order: %v, want every third record", outOfOrder)
	}
	if len(p.Waiting) != 3 {
		t.Fatalf("waiting %v, want every tenth record", p.Waiting)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestPoisonMessagesAreEachBadAndMarked(t *testing.T) {
	msgs := PoisonMessages("t", Flood{Invalid: 2, Ledger: 3, Lane: 1, Huge: 1})
	names := map[string]bool{}
	for _, m := range msgs {
		if m.Bad == nil || m.Bad.Name == "" || m.MsgID == "" {
			t.Fatalf("unmarked message %q", m.MsgID)
		}
		names[strings.SplitN(m.Bad.Name, " #", 2)[0]] = true
		if len(m.Data) >= testbed.MaxPayload {
			t.Fatalf("%s: %d bytes is over NATS's max_payload", m.Bad.Name, len(m.Data))
		}
	}
	for _, want := range []string{"not JSON", "not a CloudEvent", "NUL in the CloudEvent id", "NUL in a header value",
		"control characters in the key", "2 kB key", "lookup value over 8 kB", "event near 1 MiB that fails", "event near max_payload that fails"} {
		if !names[want] {
			t.Errorf("no %q message", want)
		}
	}
	if len(msgs) != 2*4+3*3+1*3+2 {
		t.Fatalf("%d messages", len(msgs))
	}
}

func TestInterleaveSpreadsExtraWithinTheRange(t *testing.T) {
	var msgs, extra []Message
	for i := range 100 {
		msgs = append(msgs, Message{MsgID: "m" + itoa(int64(i%10))})
	}
	for range 5 {
		extra = append(extra, Message{MsgID: "x", Bad: &BadMessage{}})
	}
	out := Interleave(msgs, extra, 0.2, 0.6)
	if len(out) != 105 {
		t.Fatalf("%d messages", len(out))
	}
	var at []int
	for i, m := range out {
		if m.Bad != nil {
			at = append(at, i)
		}
	}
	if len(at) != 5 || at[0] < 20 || at[4] > 64 || at[1]-at[0] < 5 {
		t.Fatalf("extra at %v", at)
	}
}
