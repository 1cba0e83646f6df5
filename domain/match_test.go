package domain_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
)

func newMatchSyncer(dv *recorder) (*domain.Syncer, *memStore) {
	st := newMemStore()
	return &domain.Syncer{Mappings: domain.DefaultMappings(), Store: st, Dataverse: dv, Now: time.Now}, st
}

func ops(calls []call) string {
	s := make([]string, len(calls))
	for i, c := range calls {
		s[i] = c.op
	}
	return strings.Join(s, " ")
}

func TestAMatchedCurrencyIsCoupledAndUpdatedOnItsVersion(t *testing.T) {
	base := uuid.New()
	dv := &recorder{matches: map[string][]domain.FoundRow{"transactioncurrencies": {{ID: base, Name: "US Dollar", Version: `W/"9"`}}}}
	s, st := newMatchSyncer(dv)
	out := mustSync(t, s, upsert("currency", "USD", 1, map[string]any{"code": "USD", "displayName": "US Dollar"}))
	if out.Result != domain.ResultSynced || out.RowID != base || out.Match != domain.MatchCoupled || !out.ResolvesErrors {
		t.Fatalf("outcome = %+v; want synced to the base currency", out)
	}
	if ops(dv.calls) != "match update" || dv.calls[0].attrs["isocurrencycode"] != "USD" || dv.calls[1].row.ID != base || dv.calls[1].ifMatch != `W/"9"` {
		t.Fatalf("calls = %+v; want a match by isocurrencycode, then an update of the match on its version", dv.calls)
	}
	if c, _ := st.Coupling(context.Background(), "currency", "USD"); c.RowID != base || c.Status != domain.CouplingSynced || c.Version != 1 {
		t.Fatalf("coupling = %+v", c)
	}
	// Coupled now: the next change updates without looking again.
	mustSync(t, s, upsert("currency", "USD", 2, map[string]any{"code": "USD"}))
	if ops(dv.calls) != "match update update" {
		t.Fatalf("calls = %s; a coupled record is not matched again", ops(dv.calls))
	}
}

func TestNoMatchCreatesOrFailsAsTheMappingSays(t *testing.T) {
	dv := &recorder{}
	s, _ := newMatchSyncer(dv)
	out := mustSync(t, s, upsert("customer", "C1", 1, map[string]any{"number": "C1", "displayName": "Adatum"}))
	if out.Result != domain.ResultSynced || out.Match != domain.MatchCreated || ops(dv.calls) != "match create" ||
		out.RowID != domain.DeterministicRowID("customer", "C1") {
		t.Fatalf("outcome %+v after %s; want created with its own id", out, ops(dv.calls))
	}
	m := s.Mappings["customer"]
	m.Coupling.NoCreate = true
	s.Mappings["customer"] = m
	out = mustSync(t, s, upsert("customer", "C2", 1, map[string]any{"number": "C2"}))
	if out.Result != domain.ResultFailed || out.Failure.Kind != domain.KindNoMatch || out.Failure.Class != domain.ClassCoupling ||
		!strings.Contains(out.Failure.Message, "accountnumber = C2") || ops(dv.calls) != "match create match" {
		t.Fatalf("outcome %+v after %s; want no_match and nothing created", out, ops(dv.calls))
	}
	// A record with no value for any match field is no match either.
	out = mustSync(t, s, upsert("customer", "C3", 1, map[string]any{"displayName": "No number"}))
	if out.Result != domain.ResultFailed || out.Failure.Kind != domain.KindNoMatch || ops(dv.calls) != "match create match" {
		t.Fatalf("outcome %+v after %s; want no_match without a lookup", out, ops(dv.calls))
	}
}

func TestSeveralMatchesNameTheCandidates(t *testing.T) {
	a, b := uuid.New(), uuid.New()
	dv := &recorder{matches: map[string][]domain.FoundRow{"accounts": {{ID: a, Name: "Adatum"}, {ID: b, Name: "Adatum Corp."}}}}
	s, st := newMatchSyncer(dv)
	out := mustSync(t, s, upsert("customer", "C1", 1, map[string]any{"number": "C1"}))
	f := out.Failure
	if out.Result != domain.ResultFailed || f.Kind != domain.KindMultipleMatches || f.Details["candidates"] != a.String()+","+b.String() ||
		!strings.Contains(f.Message, a.String()+" (Adatum)") || !strings.Contains(f.Message, b.String()+" (Adatum Corp.)") {
		t.Fatalf("outcome = %+v; want multiple_matches naming both", out)
	}
	if ops(dv.calls) != "match" {
		t.Fatalf("calls = %s; nothing is written when the match is ambiguous", ops(dv.calls))
	}
	if c, _ := st.Coupling(context.Background(), "customer", "C1"); c.Coupled() || c.LastErrorKind != domain.KindMultipleMatches {
		t.Fatalf("coupling = %+v", c)
	}
	// The row dvsync created for this record itself is its row, whatever else matches.
	own := domain.DeterministicRowID("customer", "C1")
	dv.matches["accounts"] = append(dv.matches["accounts"], domain.FoundRow{ID: own})
	if out := mustSync(t, s, upsert("customer", "C1", 2, map[string]any{"number": "C1"})); out.Result != domain.ResultSynced || out.RowID != own {
		t.Fatalf("outcome = %+v; want its own row", out)
	}
}

func TestAMatchCoupledToAnotherRecordIsAlreadyCoupled(t *testing.T) {
	row := uuid.New()
	dv := &recorder{matches: map[string][]domain.FoundRow{"accounts": {{ID: row, Name: "Adatum"}}}}
	s, _ := newMatchSyncer(dv)
	if out := mustSync(t, s, upsert("customer", "C1", 1, map[string]any{"number": "C1"})); out.RowID != row {
		t.Fatalf("first: %+v", out)
	}
	out := mustSync(t, s, upsert("customer", "C1-copy", 1, map[string]any{"number": "C1"}))
	f := out.Failure
	if out.Result != domain.ResultFailed || f.Kind != domain.KindAlreadyCoupled || f.Details["coupled_key"] != "C1" ||
		!strings.Contains(f.Message, "Cannot couple customer/C1-copy to this account record, because the account record is already coupled to customer/C1") {
		t.Fatalf("outcome = %+v; want already_coupled in Business Central's words", out)
	}
}

func TestMatchGroupsAreTriedInPriorityOrderAndCaseSensitiveFieldsFilter(t *testing.T) {
	m := domain.DefaultMappings()["customer"]
	m.Fields = append([]domain.FieldMapping(nil), m.Fields...)
	for i, f := range m.Fields {
		switch f.Attribute {
		case "accountnumber":
			m.Fields[i].Match = &domain.FieldMatch{Priority: 1}
		case "name":
			m.Fields[i].Match = &domain.FieldMatch{Priority: 2, CaseSensitive: true}
		case "address1_city":
			m.Fields[i].Match = &domain.FieldMatch{Priority: 2}
		}
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	row := uuid.New()
	var asked []string
	dv := &recorder{find: func(q domain.MatchQuery) []domain.FoundRow {
		var terms []string
		for _, v := range q.Values {
			terms = append(terms, v.Attribute)
		}
		asked = append(asked, strings.Join(terms, "+"))
		if len(q.Values) == 2 { // Dataverse does not regard case: both come back
			return []domain.FoundRow{{ID: uuid.New(), Values: map[string]any{"name": "ADATUM", "address1_city": "atlanta"}},
				{ID: row, Values: map[string]any{"name": "Adatum", "address1_city": "atlanta"}}}
		}
		return nil
	}}
	s, _ := newMatchSyncer(dv)
	s.Mappings["customer"] = m
	out := mustSync(t, s, upsert("customer", "C1", 1, map[string]any{"number": "C1", "displayName": "Adatum", "city": "Atlanta"}))
	if strings.Join(asked, " ") != "accountnumber name+address1_city" || out.Result != domain.ResultSynced || out.RowID != row {
		t.Fatalf("asked %v, outcome %+v; want priority 1, then priority 2 matching the name's case", asked, out)
	}
	m.Fields[1].Match = &domain.FieldMatch{Priority: -1}
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "match.priority") {
		t.Fatalf("validate = %v; want a negative priority refused", err)
	}
}

func TestNotSynchronizedAfterCouplingWritesNothing(t *testing.T) {
	row := uuid.New()
	dv := &recorder{matches: map[string][]domain.FoundRow{"transactioncurrencies": {{ID: row, Version: `W/"3"`}}}}
	s, st := newMatchSyncer(dv)
	m := s.Mappings["currency"]
	m.Coupling.NoSync = true
	s.Mappings["currency"] = m
	out := mustSync(t, s, upsert("currency", "EUR", 1, map[string]any{"code": "EUR"}))
	if out.Result != domain.ResultCoupled || out.RowID != row || ops(dv.calls) != "match" {
		t.Fatalf("outcome %+v after %s; want coupled without a write", out, ops(dv.calls))
	}
	if c, _ := st.Coupling(context.Background(), "currency", "EUR"); !c.Coupled() || c.RowVersion != `W/"3"` {
		t.Fatalf("coupling = %+v", c)
	}
}

func TestATransientLookupFailureIsRetried(t *testing.T) {
	dv := &recorder{errs: []error{&domain.DataverseError{Status: 503, Message: "Service Unavailable"}}}
	s, _ := newMatchSyncer(dv)
	s.Classifier = domain.Classifier{}
	if _, err := s.Sync(context.Background(), upsert("currency", "EUR", 1, map[string]any{"code": "EUR"})); err == nil {
		t.Fatal("a 503 on the lookup must be an error to retry, not an outcome")
	}
	if ops(dv.calls) != "match" {
		t.Fatalf("calls = %s; nothing is created after a failed lookup", ops(dv.calls))
	}
}

// A matched row is claimed under the record's lock before it is written: a row another record's
// sync has claimed is busy (tried again later, nothing written), and a claimed row is free again
// once the record's coupling is stored.
func TestAMatchedRowIsClaimedBeforeItIsWritten(t *testing.T) {
	row := uuid.New()
	dv := &recorder{matches: map[string][]domain.FoundRow{"accounts": {{ID: row, Name: "Adatum"}}}}
	s, st := newMatchSyncer(dv)
	id := "account/" + row.String()
	st.rowClaims[id] = "customer/C9" // another record's sync under way
	_, err := s.Sync(context.Background(), upsert("customer", "C1", 1, map[string]any{"number": "C1"}))
	if !errors.Is(err, domain.ErrRowBusy) || !errors.Is(err, domain.ErrRecordBusy) {
		t.Fatalf("sync of a record whose match is claimed: %v, want ErrRowBusy (an ErrRecordBusy)", err)
	}
	if ops(dv.calls) != "match" {
		t.Fatalf("calls = %s; nothing may be written to a row another record claimed", ops(dv.calls))
	}
	if c, _ := st.Coupling(context.Background(), "customer", "C1"); c.Exists {
		t.Fatalf("coupling = %+v; a busy row stores nothing", c)
	}
	delete(st.rowClaims, id) // the other sync failed and released its claim
	out := mustSync(t, s, upsert("customer", "C1", 1, map[string]any{"number": "C1"}))
	if out.Result != domain.ResultSynced || out.RowID != row || st.claimed[id] != 1 {
		t.Fatalf("outcome = %+v, claims %v; want synced to the row after claiming it once", out, st.claimed)
	}
	if len(st.rowClaims) != 0 {
		t.Fatalf("row claims after the commit: %v; want none", st.rowClaims)
	}
}

// The row a record creates is claimed too when another record could find it (its mapping
// couples by match), and not when nobody else can (a mapping without match fields, the record's
// own deterministic id): the initial load pays for a claim only where it protects something.
func TestACreatedRowIsClaimedWhenAnotherRecordCouldFindIt(t *testing.T) {
	dv := &recorder{}
	s, st := newMatchSyncer(dv)
	out := mustSync(t, s, upsert("customer", "C1", 1, map[string]any{"number": "C1"}))
	own := domain.DeterministicRowID("customer", "C1")
	if out.Match != domain.MatchCreated || st.claimed["account/"+own.String()] != 1 {
		t.Fatalf("outcome %+v, claims %v; want the created row claimed", out, st.claimed)
	}
	var plain string
	for table, m := range s.Mappings {
		if len(m.MatchGroups()) == 0 && len(m.Lookups) == 0 {
			plain = table
			break
		}
	}
	if plain == "" {
		t.Fatal("no default mapping without match fields and lookups")
	}
	m := s.Mappings[plain]
	out = mustSync(t, s, upsert(plain, "P1", 1, map[string]any{}))
	if out.Result != domain.ResultSynced || st.claimed[m.Entity+"/"+domain.DeterministicRowID(plain, "P1").String()] != 0 {
		t.Fatalf("%s: outcome %+v, claims %v; want created without a row claim", plain, out, st.claimed)
	}
}

// A record whose own row is already another record's (a person coupled that record to it) gets a
// new row, as Business Central creates one for a record that is no longer coupled: nothing is
// written to the other record's row.
func TestACreatedRowCoupledToAnotherRecordGetsANewRow(t *testing.T) {
	dv := &recorder{}
	s, st := newMatchSyncer(dv)
	own := domain.DeterministicRowID("customer", "C1")
	st.rows["customer/OTHER"] = domain.Coupling{Table: "customer", Key: "OTHER", Entity: "account", RowID: own, RowName: "Fabrikam",
		Status: domain.CouplingSynced, Exists: true}
	out := mustSync(t, s, upsert("customer", "C1", 1, map[string]any{"number": "C1"}))
	if out.Result != domain.ResultSynced || out.RowID == own || out.RowID == uuid.Nil {
		t.Fatalf("outcome = %+v; want synced to a new row", out)
	}
	if ops(dv.calls) != "match create" || dv.calls[1].row.ID != out.RowID {
		t.Fatalf("calls = %+v; want only the new row created", dv.calls)
	}
	if c, _ := st.Coupling(context.Background(), "customer", "C1"); c.RowID != out.RowID || !c.Coupled() {
		t.Fatalf("coupling = %+v; want coupled to the new row", c)
	}
	// The new row's id depends only on the record and the taken row: a retry finds it again.
	dv2 := &recorder{}
	s2, st2 := newMatchSyncer(dv2)
	st2.rows["customer/OTHER"] = st.rows["customer/OTHER"]
	if again := mustSync(t, s2, upsert("customer", "C1", 1, map[string]any{"number": "C1"})); again.RowID != out.RowID {
		t.Fatalf("a second run gave row %s, want %s", again.RowID, out.RowID)
	}
}

// When the store refuses the coupling at commit (another record was coupled to the row after
// this one claimed it: a stalled worker's claim ran out), the change is already_coupled, not an
// error retried for ever, and the record is not coupled.
func TestACouplingRefusedAtCommitIsAlreadyCoupled(t *testing.T) {
	row := uuid.New()
	dv := &recorder{matches: map[string][]domain.FoundRow{"accounts": {{ID: row, Name: "Adatum"}}}}
	s, st := newMatchSyncer(dv)
	st.beforeCommit = func() {
		st.mu.Lock()
		st.rows["customer/C2"] = domain.Coupling{Table: "customer", Key: "C2", Entity: "account", RowID: row, Status: domain.CouplingSynced, Exists: true}
		st.mu.Unlock()
		st.beforeCommit = nil
	}
	out := mustSync(t, s, upsert("customer", "C1", 1, map[string]any{"number": "C1"}))
	if out.Result != domain.ResultFailed || out.Failure.Kind != domain.KindAlreadyCoupled || out.Failure.Details["coupled_key"] != "C2" ||
		out.RowID != uuid.Nil || out.ResolvesErrors {
		t.Fatalf("outcome = %+v; want already_coupled naming customer/C2", out)
	}
	if c, _ := st.Coupling(context.Background(), "customer", "C1"); c.Coupled() {
		t.Fatalf("coupling = %+v; the refused coupling is not stored", c)
	}
}
