package domain

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/google/uuid"
)

// FieldMatch makes a field a criterion of match-based coupling, as Business Central's field
// mapping options do: fields of one priority form a group whose values must all be equal;
// groups are tried in ascending order (0, Business Central's blank, is the highest).
type FieldMatch struct {
	Priority      int  `json:"priority"`
	CaseSensitive bool `json:"caseSensitive"`
}

// MatchCoupling is a mapping's match-based coupling options, named after Business Central's
// "Create New in Case of No Match" and "Synch. After Match-Based Coupling"; both are on by
// default, as in Business Central's currency mapping, so their zero values say so.
type MatchCoupling struct {
	// NoCreate makes a record that matches no row a coupling error no_match instead of a new row.
	NoCreate bool `json:"noCreateIfNoMatch,omitempty"`
	// NoSync couples a matched record without writing its data: its next change does.
	NoSync bool `json:"noSyncAfterMatch,omitempty"`
}

// MatchGroup is one priority's match fields.
type MatchGroup struct {
	Priority int
	Fields   []FieldMapping
}

// MatchGroups are the mapping's match fields by priority, highest (lowest number) first; none
// when the mapping does not couple by match.
func (m Mapping) MatchGroups() []MatchGroup {
	by := map[int][]FieldMapping{}
	for _, f := range m.Fields {
		if f.Match != nil {
			by[f.Match.Priority] = append(by[f.Match.Priority], f)
		}
	}
	out := make([]MatchGroup, 0, len(by))
	for p, fs := range by {
		out = append(out, MatchGroup{Priority: p, Fields: fs})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Priority < out[j].Priority })
	return out
}

// MatchQuery asks Dataverse for the rows of an entity set whose attributes all equal the given
// values. Dataverse compares text without regard to case; a case-sensitive match filters what
// it returns.
type MatchQuery struct {
	EntitySet     string
	IDAttribute   string
	NameAttribute string // the primary name, returned to name candidates; "" when unknown
	Values        []MatchValue
	Top           int // at most this many rows
}

// MatchValue is one attribute's value in a MatchQuery.
type MatchValue struct {
	Attribute string
	Value     any // string, json.Number, int64, float64 or bool
}

// FoundRow is a row a MatchQuery found.
type FoundRow struct {
	ID      uuid.UUID
	Name    string
	Version string         // its ETag
	Values  map[string]any // the match attributes as Dataverse returned them
}

func (r FoundRow) String() string {
	if r.Name == "" {
		return r.ID.String()
	}
	return fmt.Sprintf("%s (%s)", r.ID, r.Name)
}

// MatchOutcome says how a record without a row got one: coupled to an existing row, or created.
type MatchOutcome string

const (
	MatchCoupled MatchOutcome = "coupled"
	MatchCreated MatchOutcome = "created"
)

// maxCandidates is how many candidates a lookup asks for: two tell that a match is not unique,
// more name them for the person who chooses.
const maxCandidates = 5

// match is what match-based coupling found for a record before its lock was taken.
type match struct {
	row     *FoundRow // the one match
	failure *Failure  // multiple_matches, or a Dataverse failure of the lookup
	// none: nothing matched (or the record has no values for any group): create, or no_match.
	none     bool
	criteria string // what was looked for, for messages
}

// findMatch looks for the record's Dataverse row by the mapping's match groups. It runs before
// the lock (it asks Dataverse); the closure acts on it only if the record is still without a row
// then, and claims the row it found first (already_coupled when another record has it). A
// non-nil error is transient.
func (s *Syncer) findMatch(ctx context.Context, m Mapping, ev ChangeEvent, attrs Attributes, out *Outcome) (*match, error) {
	groups := m.MatchGroups()
	if len(groups) == 0 {
		return nil, nil
	}
	var tried []string
	for _, g := range groups {
		q := MatchQuery{EntitySet: m.EntitySet, IDAttribute: m.PrimaryID, NameAttribute: m.PrimaryName, Top: maxCandidates}
		var terms []string
		for _, f := range g.Fields {
			v, present := attrs[f.Attribute]
			if !present || v == nil || v == "" {
				q.Values = nil // the record cannot be matched by this group
				break
			}
			q.Values = append(q.Values, MatchValue{Attribute: f.Attribute, Value: v})
			terms = append(terms, fmt.Sprintf("%s = %v", f.Attribute, v))
		}
		if len(q.Values) == 0 {
			continue
		}
		criteria := strings.Join(terms, " and ")
		tried = append(tried, criteria)
		rows, err := s.Dataverse.FindRows(ctx, q)
		if err != nil {
			f, err := s.dataverseFailure(err)
			if err != nil {
				return nil, err
			}
			return &match{failure: f, criteria: criteria}, nil
		}
		rows = caseSensitive(g, q, rows)
		s.stage(out, "match", fmt.Sprintf("%s where %s: %d found", m.EntitySet, criteria, len(rows)))
		switch {
		case len(rows) == 0:
			continue // the next group is tried
		case len(rows) > 1:
			// A row dvsync created for this very record (a crash before its coupling was stored) is its row.
			own := DeterministicRowID(ev.Table, ev.Key)
			for i := range rows {
				if rows[i].ID == own {
					return &match{row: &rows[i], criteria: criteria}, nil
				}
			}
			return &match{failure: MultipleMatches(ev, m, criteria, rows), criteria: criteria}, nil
		}
		// Whether another record has the row is decided under the lock, when the row is claimed.
		return &match{row: &rows[0], criteria: criteria}, nil
	}
	return &match{none: true, criteria: strings.Join(tried, "; or ")}, nil
}

// caseSensitive keeps the rows whose case-sensitive match fields equal the record's exactly:
// Dataverse's eq does not regard case.
func caseSensitive(g MatchGroup, q MatchQuery, rows []FoundRow) []FoundRow {
	var exact []MatchValue
	for i, f := range g.Fields {
		if f.Match.CaseSensitive {
			if _, isText := q.Values[i].Value.(string); isText {
				exact = append(exact, q.Values[i])
			}
		}
	}
	if len(exact) == 0 {
		return rows
	}
	kept := rows[:0:0]
	for _, r := range rows {
		ok := true
		for _, v := range exact {
			if got, _ := r.Values[v.Attribute].(string); got != v.Value {
				ok = false
				break
			}
		}
		if ok {
			kept = append(kept, r)
		}
	}
	return kept
}

// applyMatch acts, under the record's lock, on what match-based coupling found for a record that
// is still without a row: it couples the record to its match (and writes its data unless the
// mapping says not to), creates its row, or fails. handled is false when it leaves the record to
// the create that follows.
func (s *Syncer) applyMatch(ctx context.Context, w rowWriter, m Mapping, ev ChangeEvent, cur Coupling, attrs Attributes, found *match) (next Coupling, handled bool, err error) {
	out := w.out
	switch {
	case found.failure != nil:
		next, err = s.fail(out, cur, m, found.failure)
		return next, true, err
	case found.none && m.Coupling.NoCreate:
		next, err = s.fail(out, cur, m, NoMatch(ev, m, found.criteria))
		return next, true, err
	case found.none:
		out.Match = MatchCreated
		return cur, false, nil
	}
	row := found.row
	ref := m.Row(row.ID)
	if next, taken, err := s.claimRow(ctx, w, m, ev, cur, *row); taken || err != nil {
		return next, true, err
	}
	out.Match = MatchCoupled
	version := row.Version
	// The row keeps the name it was found with unless the update sends another.
	name := m.RowName(attrs, row.Name)
	if m.Coupling.NoSync {
		name = row.Name
		s.stage(out, "couple", fmt.Sprintf("%s/%s -> %s (matched by %s; not synchronized after coupling)", ev.Table, ev.Key, named(ref, row.Name), found.criteria))
		out.Result, out.RowID, out.ResolvesErrors = ResultCoupled, row.ID, true
	} else {
		s.stage(out, "couple", fmt.Sprintf("%s/%s -> %s (matched by %s)", ev.Table, ev.Key, named(ref, row.Name), found.criteria))
		s.stage(out, "dataverse", "update "+ref.String())
		version, err = w.update(ctx, ref, attrs, row.Version)
		if isRowMissing(err, row.ID) { // deleted since it was found: the record gets a row of its own
			out.Match = MatchCreated
			return cur, false, nil
		}
		if err != nil {
			f, err := s.dataverseFailure(err)
			if err != nil {
				return cur, true, err
			}
			next, err = s.fail(out, cur, m, f)
			return next, true, err
		}
		out.Result, out.RowID, out.ResolvesErrors = ResultSynced, row.ID, true
	}
	return Coupling{Table: ev.Table, Key: ev.Key, RowID: row.ID, Entity: m.Entity, RowName: name, RowVersion: version, Version: ev.Version,
		Status: CouplingSynced, LastSyncedAt: s.Now().UTC(), LastAttemptAt: s.Now().UTC()}, true, nil
}

// claimRow claims the row for the record before it is coupled to it (see RecordLock.ClaimRow).
// taken is true when another record is coupled to the row: next then records already_coupled. An
// error (the row busy in another record's sync, the lock lost) stores nothing: the change is
// tried again.
func (s *Syncer) claimRow(ctx context.Context, w rowWriter, m Mapping, ev ChangeEvent, cur Coupling, row FoundRow) (next Coupling, taken bool, err error) {
	err = w.lock.ClaimRow(ctx, m.Entity, row.ID)
	var other *RowTakenError
	if !errors.As(err, &other) {
		return cur, false, err
	}
	next, err = s.alreadyCoupled(w, m, ev, cur, row, other)
	return next, true, err
}

// alreadyCoupled records the already_coupled failure of a record whose row other has.
func (s *Syncer) alreadyCoupled(w rowWriter, m Mapping, ev ChangeEvent, cur Coupling, row FoundRow, other *RowTakenError) (Coupling, error) {
	if row.Name == "" {
		row.Name = other.Other.RowName
	}
	s.stage(w.out, "couple", fmt.Sprintf("%s is coupled to %s/%s", named(m.Row(row.ID), row.Name), other.Other.Table, other.Other.Key))
	return s.fail(w.out, cur, m, AlreadyCoupled(ev, m, row, other.Other))
}

// NoMatch is the coupling failure for a record that matches no row while its mapping does not
// create rows when nothing matches.
func NoMatch(ev ChangeEvent, m Mapping, criteria string) *Failure {
	msg := fmt.Sprintf("%s cannot be coupled: no %s record in Dataverse matches it (%s), and the mapping does not create new records when nothing matches.",
		ev.Ref(), m.Entity, criteria)
	if criteria == "" {
		msg = fmt.Sprintf("%s cannot be coupled: it has no values for the %s mapping's match fields, and the mapping does not create new records when nothing matches.",
			ev.Ref(), m.Table)
	}
	return &Failure{
		Class:   ClassCoupling,
		Kind:    KindNoMatch,
		Message: msg,
		Resolution: fmt.Sprintf("Create the %s record in Dataverse or correct the record's match fields, or couple it by hand (%s on "+
			"the error's page, with the row's id: %s); or let the mapping create new records (createNewIfNoMatch); then retry %s.",
			m.Entity, ActionCouple.Button, ActionCouple.CLI(ev.Table, ev.Key, "ROW"), ev.Ref()),
		Details: map[string]string{"entity": m.Entity, "criteria": criteria},
	}
}

// MultipleMatches is the coupling failure for a record that matches several rows, naming them.
func MultipleMatches(ev ChangeEvent, m Mapping, criteria string, rows []FoundRow) *Failure {
	names := make([]string, len(rows))
	ids := make([]string, len(rows))
	for i, r := range rows {
		names[i], ids[i] = r.String(), r.ID.String()
	}
	count := fmt.Sprint(len(rows))
	if len(rows) >= maxCandidates {
		count = "at least " + count
	}
	return &Failure{
		Class: ClassCoupling,
		Kind:  KindMultipleMatches,
		Message: fmt.Sprintf("%s cannot be coupled: %s %s records in Dataverse match it (%s): %s.",
			ev.Ref(), count, m.Entity, criteria, strings.Join(names, ", ")),
		Resolution: fmt.Sprintf("Couple %s by hand to the right one (%s on the error's page, with the row's id: %s), or make the "+
			"match unique (remove the duplicates in Dataverse, or add a field to the match priority); then retry.",
			ev.Ref(), ActionCouple.Button, ActionCouple.CLI(ev.Table, ev.Key, "ROW")),
		Details: map[string]string{"entity": m.Entity, "criteria": criteria, "candidates": strings.Join(ids, ","),
			"candidate_names": strings.Join(names, ", ")},
	}
}

// AlreadyCoupled is the coupling failure for a record whose one match is coupled to another
// record, in Business Central's words.
func AlreadyCoupled(ev ChangeEvent, m Mapping, row FoundRow, other Coupling) *Failure {
	return &Failure{
		Class: ClassCoupling,
		Kind:  KindAlreadyCoupled,
		Message: fmt.Sprintf("Cannot couple %s to this %s record, because the %s record is already coupled to %s/%s (%s).",
			ev.Ref(), m.Entity, m.Entity, other.Table, other.Key, NamedRow{Entity: m.Entity, ID: row.ID, Name: row.Name}),
		Resolution: fmt.Sprintf("Uncouple %s/%s if the row is %s's, or correct the match fields of one of the records; then retry %s.",
			other.Table, other.Key, ev.Ref(), ev.Ref()),
		Details: map[string]string{"entity": m.Entity, "row_id": row.ID.String(), "row_name": row.Name,
			"coupled_table": other.Table, "coupled_key": other.Key},
	}
}
