package main

// The checker: what the suite expects after a scenario, what it read back, and the breaks
// between the two. It is pure (no I/O), so that its rules are unit tested.

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/dvsync/dvsync/domain"
)

// Expect is what the load published, as the checker needs it.
type Expect struct {
	// Newest is the newest version published of every well-formed customer.
	Newest map[string]int64
	// Waiting are the customers whose currency is not coupled yet: each must have an open error
	// that keeps its newest change (for the automatic replay), and no row yet.
	Waiting map[string]bool
	// Bad are the malformed and hostile messages: each must be in the errors ledger.
	Bad []BadMessage
}

// BadMessage is one malformed or hostile message as published.
type BadMessage struct {
	Name string // what is wrong with it, for the report
	Key  string // the record key it names, when it has one
	ID   string // its CloudEvent id, when it has one
	Seq  uint64 // its stream sequence (from the publish ack)
}

// Snapshot is what the suite read of the system at one moment.
type Snapshot struct {
	Rows      []Row               // the emulator's accounts
	Couplings map[string]Coupling // by "table/key"
	Errors    []LedgerError       // the errors ledger (sync_errors)
	// OccurrenceSeqs are the stream sequences of every stored error occurrence.
	OccurrenceSeqs map[uint64]bool
	Backlogs       []Backlog
	// Exited names the dvsync and nats processes that exited without being asked to.
	Exited []string
}

// Row is one Dataverse account.
type Row struct {
	ID     string
	Number string // accountnumber: the customer key
	Name   string // name: "<key> v<version>"
}

// Coupling is one couplings row.
type Coupling struct {
	Version       int64
	Status        string
	Skipped       bool
	LastErrorKind string
}

// LedgerError is one sync_errors row.
type LedgerError struct {
	ID           int64
	Kind         string
	Table        string
	Key          string
	Status       string
	EventID      string
	EventVersion *int64
	Seq          uint64 // delivery->>'sequence' of its latest occurrence
}

// active reports whether the error still asks for something: open, or replayed and not settled.
func (e LedgerError) active() bool { return e.Status == "open" || e.Status == "replayed" }

// Backlog is a durable consumer's unfinished work.
type Backlog struct {
	Consumer   string
	Pending    uint64 // not delivered yet
	AckPending uint64 // delivered, not acked (in flight, nak'd with a delay, or held by a dead process)
	Err        string // the consumer could not be read
}

// Report is the verdict on one snapshot.
type Report struct {
	Lost, Duplicated, Stale int
	// Stuck counts messages the durable consumers have not finished.
	Stuck int
	// Ledger counts breaks of the errors ledger: a bad message not stored, an open error keeping
	// an older change, an error open for a synced record, a record parked for a transient cause.
	Ledger int
	Breaks []Break
}

// Break is one rule that does not hold, with how often and a few examples.
type Break struct {
	Rule     string
	Count    int
	Examples []string
}

// OK reports whether every rule holds.
func (r Report) OK() bool { return len(r.Breaks) == 0 }

const maxExamples = 4

func (r *Report) add(rule, example string) {
	for i := range r.Breaks {
		if r.Breaks[i].Rule == rule {
			r.Breaks[i].Count++
			if len(r.Breaks[i].Examples) < maxExamples {
				r.Breaks[i].Examples = append(r.Breaks[i].Examples, example)
			}
			return
		}
	}
	r.Breaks = append(r.Breaks, Break{Rule: rule, Count: 1, Examples: []string{example}})
}

// Rules, as the report names them.
const (
	RuleLost       = "lost: a well-formed record has no Dataverse row"
	RuleDuplicated = "duplicated: a record has more than one Dataverse row"
	RuleStale      = "stale: the Dataverse row does not hold the record's newest version"
	// The two ways stale rows have come about, told apart by the coupling.
	RuleStaleOverwritten = "stale: an older write landed over the newest one the coupling says synced (a write dvsync gave up on, applied late)"
	RuleStaleDropped     = "stale: an older version synced last and the coupling agrees: the newest change was dropped (a kept or replayed change that was not the newest)"
	RuleWaitingError     = "an open error must keep the newest change of a record waiting for its dependency"
	RuleOlderKept        = "an open error keeps an older change than the newest published"
	RuleOpenForSynced    = "an error is open for a record that synced"
	RuleUnledgered       = "a bad message is not in the errors ledger"
	RuleTransient        = "a record is skipped or parked for a transient cause"
	RuleBacklog          = "a durable consumer has not drained"
	RuleConsumer         = "a durable consumer cannot be read"
	RuleExited           = "a process exited unasked"
)

// transientKinds are the causes that must never skip or park a record (dataverse_unavailable is a
// transient failure past its retry budget, which the suite sets far beyond a scenario).
var transientKinds = map[string]bool{
	string(domain.KindThrottled): true, string(domain.KindServerError): true, string(domain.KindNetwork): true,
	string(domain.KindTimeout): true, string(domain.KindInternal): true, string(domain.KindDataverseUnavailable): true,
}

// rowVersion reads the version out of a row's name, "C00017 v4"; -1 when it holds none.
func rowVersion(name string) int64 {
	i := strings.LastIndex(name, " v")
	if i < 0 {
		return -1
	}
	v, err := strconv.ParseInt(name[i+2:], 10, 64)
	if err != nil {
		return -1
	}
	return v
}

// Check applies every rule to a snapshot.
func Check(e Expect, s Snapshot) Report {
	var r Report
	rows := map[string][]Row{}
	for _, row := range s.Rows {
		rows[row.Number] = append(rows[row.Number], row)
	}
	active := map[string][]LedgerError{} // by customer key
	for _, le := range s.Errors {
		if le.Table == "customer" && le.active() {
			active[le.Key] = append(active[le.Key], le)
		}
	}

	for _, key := range sortedKeys(e.Newest) {
		newest := e.Newest[key]
		c, coupled := s.Couplings["customer/"+key]
		if e.Waiting[key] {
			checkWaiting(&r, key, newest, active[key])
			continue
		}
		got := rows[key]
		switch {
		case len(got) == 0:
			r.Lost++
			r.add(RuleLost, fmt.Sprintf("customer/%s (newest v%d; coupling %s)", key, newest, describe(c, coupled)))
		case len(got) > 1:
			r.Duplicated++
			ids := make([]string, len(got))
			for i, row := range got {
				ids[i] = row.ID
			}
			r.add(RuleDuplicated, fmt.Sprintf("customer/%s has %d rows: %s", key, len(got), strings.Join(ids, ", ")))
		}
		if len(got) > 0 {
			if v := rowVersion(got[0].Name); v != newest {
				r.Stale++
				rule := RuleStale
				switch {
				case coupled && c.Status == "synced" && c.Version == newest:
					rule = RuleStaleOverwritten
				case coupled && c.Status == "synced" && c.Version == v:
					rule = RuleStaleDropped
				}
				r.add(rule, fmt.Sprintf("customer/%s: row says %q, newest v%d, coupling %s", key, got[0].Name, newest, describe(c, coupled)))
			}
		}
		if !coupled || c.Status != "synced" {
			continue // not synced: lost or stale above, and its open error says why
		}
		for _, le := range active[key] {
			r.Ledger++
			r.add(RuleOpenForSynced, fmt.Sprintf("error %d (%s, %s, v%s) of customer/%s, coupling %s", le.ID, le.Kind, le.Status, version(le.EventVersion), key, describe(c, coupled)))
		}
	}

	checkBad(&r, e.Bad, s)

	for _, ref := range sortedKeys(s.Couplings) {
		if c := s.Couplings[ref]; c.Skipped && transientKinds[c.LastErrorKind] {
			r.Ledger++
			r.add(RuleTransient, fmt.Sprintf("%s skipped after %s", ref, c.LastErrorKind))
		}
	}
	for _, le := range s.Errors {
		if transientKinds[le.Kind] {
			r.Ledger++
			r.add(RuleTransient, fmt.Sprintf("error %d: %s/%s parked as %s (%s)", le.ID, le.Table, le.Key, le.Kind, le.Status))
		}
	}

	for _, b := range s.Backlogs {
		if b.Err != "" {
			r.add(RuleConsumer, fmt.Sprintf("%s: %s", b.Consumer, b.Err))
			continue
		}
		if n := b.Pending + b.AckPending; n > 0 {
			r.Stuck += int(n)
			r.add(RuleBacklog, fmt.Sprintf("%s: %d pending, %d ack pending", b.Consumer, b.Pending, b.AckPending))
		}
	}
	for _, p := range s.Exited {
		r.add(RuleExited, p)
	}
	return r
}

// checkWaiting: a record whose dependency is not coupled yet has one open error keeping its
// newest change, so that the automatic replay sends the newest state.
func checkWaiting(r *Report, key string, newest int64, active []LedgerError) {
	var kept []string
	for _, le := range active {
		if le.Kind != string(domain.KindDependencyNotCoupled) {
			continue
		}
		if le.EventVersion != nil && *le.EventVersion == newest {
			return
		}
		kept = append(kept, fmt.Sprintf("error %d keeps v%s", le.ID, version(le.EventVersion)))
	}
	r.Ledger++
	if len(kept) == 0 {
		r.add(RuleWaitingError, fmt.Sprintf("customer/%s (newest v%d) has no open dependency_not_coupled error", key, newest))
		return
	}
	r.add(RuleOlderKept, fmt.Sprintf("customer/%s: %s, newest is v%d", key, strings.Join(kept, "; "), newest))
}

// checkBad: each bad message is stored, found by its stream sequence, its record key (as it is,
// or as "seq:<n>" for undecodable ones) or its CloudEvent id.
func checkBad(r *Report, bad []BadMessage, s Snapshot) {
	seqs, keys, ids := map[uint64]bool{}, map[string]bool{}, map[string]bool{}
	for seq := range s.OccurrenceSeqs {
		seqs[seq] = true
	}
	for _, le := range s.Errors {
		seqs[le.Seq] = true
		keys[le.Key] = true
		if le.EventID != "" {
			ids[le.EventID] = true
		}
	}
	// One example per kind of message, so that every kind that is missing shows.
	var kinds []string
	missing := map[string][]BadMessage{}
	for _, b := range bad {
		found := (b.Seq != 0 && (seqs[b.Seq] || keys["seq:"+strconv.FormatUint(b.Seq, 10)])) ||
			(b.Key != "" && keys[b.Key]) || (b.ID != "" && ids[b.ID])
		if found {
			continue
		}
		kind, _, _ := strings.Cut(b.Name, " #")
		if missing[kind] == nil {
			kinds = append(kinds, kind)
		}
		missing[kind] = append(missing[kind], b)
	}
	if len(kinds) == 0 {
		return
	}
	total := map[string]int{}
	for _, b := range bad {
		kind, _, _ := strings.Cut(b.Name, " #")
		total[kind]++
	}
	br := Break{Rule: RuleUnledgered}
	for _, kind := range kinds {
		m := missing[kind]
		br.Count += len(m)
		br.Examples = append(br.Examples, fmt.Sprintf("%s: %d of %d (first at stream seq %d)", kind, len(m), total[kind], m[0].Seq))
	}
	r.Ledger += br.Count
	r.Breaks = append(r.Breaks, br)
}

// midPrefix marks a break seen before the late currency was coupled.
const midPrefix = "before the late currency was coupled: "

// Merge joins the verdict before the late currency was coupled (mid) with the final one: the
// final counts, plus the breaks only the earlier state showed (an open error keeping an older
// change is only visible while the record waits).
func Merge(mid, final Report) Report {
	out := final
	out.Breaks = slices.Clone(final.Breaks)
	out.Stuck = max(mid.Stuck, final.Stuck)
	for _, b := range mid.Breaks {
		if slices.ContainsFunc(final.Breaks, func(f Break) bool { return f.Rule == b.Rule }) {
			continue
		}
		if ledgerRules[b.Rule] {
			out.Ledger += b.Count
		}
		b.Rule = midPrefix + b.Rule
		out.Breaks = append(out.Breaks, b)
	}
	return out
}

// ledgerRules are the rules the Ledger count adds up.
var ledgerRules = map[string]bool{RuleWaitingError: true, RuleOlderKept: true, RuleOpenForSynced: true,
	RuleUnledgered: true, RuleTransient: true}

func describe(c Coupling, ok bool) string {
	if !ok {
		return "none"
	}
	s := fmt.Sprintf("%s at v%d", c.Status, c.Version)
	if c.Skipped {
		s += ", skipped"
	}
	if c.LastErrorKind != "" {
		s += ", last error " + c.LastErrorKind
	}
	return s
}

func version(v *int64) string {
	if v == nil {
		return "?"
	}
	return strconv.FormatInt(*v, 10)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
