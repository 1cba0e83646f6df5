package domain_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
)

// newSyncer is a syncer over the default mappings without match-based coupling, for the tests
// of what happens to a record's own row (match_test.go tests matching).
func newSyncer(dv *recorder) (*domain.Syncer, *memStore) {
	st := newMemStore()
	ms := domain.DefaultMappings()
	for t, m := range ms {
		m.Fields = append([]domain.FieldMapping(nil), m.Fields...)
		for i := range m.Fields {
			m.Fields[i].Match = nil
		}
		ms[t] = m
	}
	return &domain.Syncer{Mappings: ms, Store: st, Dataverse: dv, Now: time.Now}, st
}

func upsert(table, key string, version int64, fields map[string]any) domain.ChangeEvent {
	return domain.ChangeEvent{ID: uuid.NewString(), Type: domain.EventUpserted, Table: table, Key: key, Version: version, Fields: fields}
}

func mustSync(t *testing.T, s *domain.Syncer, ev domain.ChangeEvent) domain.Outcome {
	t.Helper()
	out, err := s.Sync(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestVersionRule(t *testing.T) {
	dv := &recorder{}
	s, st := newSyncer(dv)
	if out := mustSync(t, s, upsert("currency", "EUR", 5, map[string]any{"code": "EUR"})); out.Result != domain.ResultSynced {
		t.Fatalf("first sync: %+v", out)
	}
	for _, v := range []int64{4, 5} {
		out := mustSync(t, s, upsert("currency", "EUR", v, map[string]any{"code": "OLD"}))
		if out.Result != domain.ResultStale {
			t.Fatalf("version %d after 5: %s, want stale", v, out.Result)
		}
	}
	if len(dv.calls) != 1 {
		t.Fatalf("%d Dataverse calls; stale events must not call Dataverse", len(dv.calls))
	}
	// A delete is final too: an older upsert delivered late does not bring the record back.
	del := domain.ChangeEvent{ID: "d", Type: domain.EventDeleted, Table: "currency", Key: "EUR", Version: 7}
	if out := mustSync(t, s, del); out.Result != domain.ResultDeleted {
		t.Fatalf("delete: %+v", out)
	}
	if out := mustSync(t, s, upsert("currency", "EUR", 6, map[string]any{"code": "EUR"})); out.Result != domain.ResultStale {
		t.Fatalf("upsert v6 after delete v7: %s", out.Result)
	}
	if c, _ := st.Coupling(context.Background(), "currency", "EUR"); c.Version != 7 || c.Status != domain.CouplingDeleted {
		t.Fatalf("coupling = %+v", c)
	}
}

// dvErr is a Dataverse error answer with a status and code.
func dvErr(status int, code, message string) error {
	return &domain.DataverseError{Status: status, Code: code, Message: message}
}

func TestEveryWriteIsConditionedOnTheVersionDvsyncWroteLast(t *testing.T) {
	dv := &recorder{}
	s, st := newSyncer(dv)
	mustSync(t, s, upsert("currency", "EUR", 1, map[string]any{"code": "EUR"}))
	c, _ := st.Coupling(context.Background(), "currency", "EUR")
	if c.RowVersion != `W/"1"` {
		t.Fatalf("coupling keeps version %q, want the create's W/\"1\"", c.RowVersion)
	}
	mustSync(t, s, upsert("currency", "EUR", 2, map[string]any{"code": "EUR"}))
	mustSync(t, s, domain.ChangeEvent{ID: "d", Type: domain.EventDeleted, Table: "currency", Key: "EUR", Version: 3})
	if u, d := dv.calls[1], dv.calls[2]; u.op != "update" || u.ifMatch != `W/"1"` || d.op != "update" || d.ifMatch != `W/"2"` {
		t.Fatalf("calls %+v, %+v: the update must be conditioned on W/\"1\", the deactivation on W/\"2\"", u, d)
	}
}

func TestARowChangedSinceTheLastWriteIsOverwrittenOnItsNewVersion(t *testing.T) {
	dv := &recorder{}
	s, st := newSyncer(dv)
	mustSync(t, s, upsert("currency", "EUR", 1, map[string]any{"code": "EUR"}))
	// Someone (a person, or a write dvsync gave up on) changed the row since: 412.
	dv.versions = 7
	dv.errs = []error{dvErr(412, "0x80060882", "The version of the existing record doesn't match the RowVersion property provided.")}
	out := mustSync(t, s, upsert("currency", "EUR", 2, map[string]any{"code": "EUR"}))
	if out.Result != domain.ResultSynced || out.Overwrites != 1 {
		t.Fatalf("outcome %+v, want synced with one overwrite", out)
	}
	ops := []string{}
	for _, c := range dv.calls[1:] {
		ops = append(ops, c.op+" "+c.ifMatch)
	}
	if fmt.Sprint(ops) != `[update W/"1" version  update W/"7"]` {
		t.Fatalf("calls %q: want the update, a read of the row's version, and the update on that version", ops)
	}
	if c, _ := st.Coupling(context.Background(), "currency", "EUR"); c.RowVersion != `W/"8"` || c.Version != 2 {
		t.Fatalf("coupling %+v", c)
	}
}

func TestARowThatKeepsChangingIsReportedAsAnUpdateConflict(t *testing.T) {
	dv := &recorder{}
	s, _ := newSyncer(dv)
	mustSync(t, s, upsert("currency", "EUR", 1, map[string]any{"code": "EUR"}))
	mismatch := dvErr(412, "0x80060882", "The version of the existing record doesn't match the RowVersion property provided.")
	dv.errs = []error{mismatch, nil, mismatch, nil, mismatch}
	out := mustSync(t, s, upsert("currency", "EUR", 2, map[string]any{"code": "EUR"}))
	if out.Result != domain.ResultFailed || out.Failure.Kind != domain.KindUpdateConflict {
		t.Fatalf("outcome %+v, want an update_conflict after three rounds", out)
	}
}

func TestACreateThatFindsItsRowAdoptsIt(t *testing.T) {
	dv := &recorder{versions: 4}
	s, st := newSyncer(dv)
	// An earlier attempt created the row, then the worker died before recording the coupling.
	dv.errs = []error{dvErr(412, "0x80040237", "A record with matching key values already exists.")}
	out := mustSync(t, s, upsert("currency", "EUR", 1, map[string]any{"code": "EUR"}))
	if out.Result != domain.ResultSynced || len(dv.calls) != 3 || dv.calls[1].op != "version" ||
		dv.calls[2].op != "update" || dv.calls[2].ifMatch != `W/"4"` {
		t.Fatalf("outcome %+v, calls %+v: want create, version read, update on W/\"4\"", out, dv.calls)
	}
	if c, _ := st.Coupling(context.Background(), "currency", "EUR"); !c.Coupled() || c.RowVersion != `W/"5"` {
		t.Fatalf("coupling %+v", c)
	}
}

func TestNewRecordIsUpsertedByItsDeterministicID(t *testing.T) {
	dv := &recorder{}
	s, _ := newSyncer(dv)
	mustSync(t, s, upsert("currency", "EUR", 1, map[string]any{"code": "EUR"}))
	want := domain.DeterministicRowID("currency", "EUR")
	if c := dv.calls[0]; c.op != "create" || c.row.ID != want || c.row.EntitySet != "transactioncurrencies" {
		t.Fatalf("call = %+v, want an upsert of %s", c, want)
	}
	if domain.DeterministicRowID("currency", "EUR") != want || domain.DeterministicRowID("currency", "USD") == want {
		t.Fatal("the row id must depend on the record only")
	}
	mustSync(t, s, upsert("currency", "EUR", 2, map[string]any{"code": "EUR"}))
	if c := dv.calls[1]; c.op != "update" || c.row.ID != want {
		t.Fatalf("a coupled record must be updated by its row id (If-Match), got %+v", c)
	}
}

func TestUncoupledDependencyFailsWithoutCallingDataverse(t *testing.T) {
	dv := &recorder{}
	s, st := newSyncer(dv)
	out := mustSync(t, s, upsert("customer", "C1", 1, map[string]any{"number": "C1", "currencyCode": "EUR"}))
	if out.Result != domain.ResultFailed || out.Failure.Kind != domain.KindDependencyNotCoupled ||
		out.Failure.Message != "customer/C1 cannot be synchronized: Currency Code EUR must be coupled to a record in Dataverse." {
		t.Fatalf("outcome = %+v", out.Failure)
	}
	if len(dv.calls) != 0 {
		t.Fatalf("Dataverse was called: %+v", dv.calls)
	}
	if c, _ := st.Coupling(context.Background(), "customer", "C1"); c.Status != domain.CouplingFailed || c.Version != domain.NoVersion {
		t.Fatalf("coupling = %+v; a failure must not move the version", c)
	}
	// The currency's first sync is announced (records may wait for it); its next one is not.
	if out := mustSync(t, s, upsert("currency", "EUR", 1, map[string]any{"code": "EUR"})); !out.ResolvesErrors {
		t.Fatal("a record's first coupling must be announced, for the records waiting on it")
	}
	if out := mustSync(t, s, upsert("currency", "EUR", 2, map[string]any{"code": "EUR"})); out.ResolvesErrors {
		t.Fatal("a plain update of a synced record announced itself")
	}
	// Coupled, the lookup is bound to the currency's row; an emptied field clears it.
	out = mustSync(t, s, upsert("customer", "C1", 1, map[string]any{"number": "C1", "currencyCode": "EUR"}))
	bind := dv.calls[len(dv.calls)-1].attrs["transactioncurrencyid@odata.bind"]
	if out.Result != domain.ResultSynced || !out.ResolvesErrors || bind != "/transactioncurrencies("+domain.DeterministicRowID("currency", "EUR").String()+")" {
		t.Fatalf("outcome %+v, bind %v", out, bind)
	}
	mustSync(t, s, upsert("customer", "C1", 2, map[string]any{"number": "C1", "currencyCode": ""}))
	if a := dv.calls[len(dv.calls)-1].attrs; !hasKey(a, "transactioncurrencyid@odata.bind") || a["transactioncurrencyid@odata.bind"] != nil {
		t.Fatalf("an emptied lookup must be sent as null: %v", a)
	}
}

// With a local currency configured, a blank currency code means it (Business Central's LCY): the
// lookup binds the local currency's row rather than clearing. While no currency record of it is
// coupled (Business Central keeps LCY in its setup, not among its currencies), Dataverse's
// currency of that ISO code is bound, found once; a Dataverse without one fails the record.
func TestABlankCurrencyCodeIsTheLocalCurrency(t *testing.T) {
	dv := &recorder{}
	s, _ := newSyncer(dv)
	s.LocalCurrency = "USD"
	out := mustSync(t, s, upsert("customer", "C1", 1, map[string]any{"number": "C1", "currencyCode": ""}))
	if out.Result != domain.ResultFailed || out.Failure.Kind != domain.KindDependencyNotCoupled ||
		!strings.Contains(out.Failure.Message, "no currency with the ISO code USD") {
		t.Fatalf("blank, no currency record of USD coupled, none in Dataverse: %+v", out.Failure)
	}
	if c := dv.calls[0]; c.op != "find" || c.row.EntitySet != "transactioncurrencies" || c.attrs["filter"] != "isocurrencycode eq 'USD'" {
		t.Fatalf("calls = %+v; want the currency looked up by its ISO code", dv.calls)
	}
	base := uuid.New()
	dv.found, dv.calls = base, nil
	for v := int64(1); v <= 2; v++ {
		out = mustSync(t, s, upsert("customer", "C1", v, map[string]any{"number": "C1", "currencyCode": ""}))
		bind := dv.calls[len(dv.calls)-1].attrs["transactioncurrencyid@odata.bind"]
		if out.Result != domain.ResultSynced || bind != "/transactioncurrencies("+base.String()+")" {
			t.Fatalf("version %d: outcome %+v, bind %v; want Dataverse's USD", v, out, bind)
		}
	}
	if ops(dv.calls) != "find create update" {
		t.Fatalf("calls = %s; the local currency's row is looked up once", ops(dv.calls))
	}
	mustSync(t, s, upsert("currency", "USD", 1, map[string]any{"code": "USD"}))
	out = mustSync(t, s, upsert("customer", "C1", 3, map[string]any{"number": "C1", "currencyCode": ""}))
	bind := dv.calls[len(dv.calls)-1].attrs["transactioncurrencyid@odata.bind"]
	if out.Result != domain.ResultSynced || bind != "/transactioncurrencies("+domain.DeterministicRowID("currency", "USD").String()+")" {
		t.Fatalf("coupled: outcome %+v, bind %v; want the coupled record's row", out, bind)
	}
}

func TestTransientFailuresAreReturnedNotRecorded(t *testing.T) {
	dv := &recorder{errs: []error{&domain.DataverseError{Status: 429, Code: "0x80072322", RetryAfter: 3 * time.Second}}}
	s, st := newSyncer(dv)
	_, err := s.Sync(context.Background(), upsert("currency", "EUR", 1, map[string]any{"code": "EUR"}))
	var f *domain.Failure
	if !errors.As(err, &f) || !f.Transient() || f.RetryAfter != 3*time.Second {
		t.Fatalf("err = %v, want a transient failure carrying Retry-After", err)
	}
	if c, _ := st.Coupling(context.Background(), "currency", "EUR"); c.Exists {
		t.Fatalf("a transient failure was recorded: %+v", c)
	}
}

func rowMissing(row uuid.UUID) error {
	return fmt.Errorf("PATCH: %w", &domain.DataverseError{Status: 404, Code: "0x80040217", Message: "transactioncurrency With Id = " + row.String() + " Does Not Exist"})
}

func TestDestinationDeletedPolicies(t *testing.T) {
	row := domain.DeterministicRowID("currency", "EUR")
	for _, tc := range []struct {
		policy domain.ConflictPolicy
		result domain.Result
		ops    []string
	}{
		{domain.ConflictReport, domain.ResultFailed, []string{"create", "update"}},
		{domain.ConflictRestore, domain.ResultSynced, []string{"create", "update", "create"}},
		{domain.ConflictUncouple, domain.ResultUncoupled, []string{"create", "update"}},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			dv := &recorder{}
			s, _ := newSyncer(dv)
			m := s.Mappings["currency"]
			m.OnDestinationDeleted = tc.policy
			s.Mappings["currency"] = m
			mustSync(t, s, upsert("currency", "EUR", 1, map[string]any{"code": "EUR"}))
			dv.errs = []error{rowMissing(row)}
			out := mustSync(t, s, upsert("currency", "EUR", 2, map[string]any{"code": "EUR"}))
			if out.Result != tc.result || len(dv.calls) != len(tc.ops) {
				t.Fatalf("result %s after %d calls; want %s after %v", out.Result, len(dv.calls), tc.result, tc.ops)
			}
			if tc.policy == domain.ConflictReport && (out.Failure.Kind != domain.KindDestinationDeleted || out.Failure.Class != domain.ClassCoupling) {
				t.Fatalf("failure = %+v", out.Failure)
			}
		})
	}
}

func TestDeletePolicies(t *testing.T) {
	for _, tc := range []struct {
		policy domain.DeletePolicy
		op     string
		result domain.Result
	}{
		{domain.DeleteRow, "delete", domain.ResultDeleted},
		{domain.DeleteDeactivate, "update", domain.ResultDeleted},
		{domain.DeleteUncouple, "", domain.ResultUncoupled},
		{domain.DeleteReport, "", domain.ResultFailed},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			dv := &recorder{}
			s, _ := newSyncer(dv)
			m := s.Mappings["currency"]
			m.OnDelete = tc.policy
			s.Mappings["currency"] = m
			mustSync(t, s, upsert("currency", "EUR", 1, map[string]any{"code": "EUR"}))
			out := mustSync(t, s, domain.ChangeEvent{ID: "d", Type: domain.EventDeleted, Table: "currency", Key: "EUR", Version: 2})
			var op string
			if len(dv.calls) == 2 {
				op = dv.calls[1].op
			}
			if out.Result != tc.result || op != tc.op {
				t.Fatalf("result %s, call %q; want %s, %q", out.Result, op, tc.result, tc.op)
			}
			if tc.policy == domain.DeleteDeactivate && dv.calls[1].attrs["statecode"] != 1 {
				t.Fatalf("deactivation sent %v", dv.calls[1].attrs)
			}
		})
	}
	// A delete of a record never coupled calls nothing and records the version.
	dv := &recorder{}
	s, _ := newSyncer(dv)
	if out := mustSync(t, s, domain.ChangeEvent{ID: "d", Type: domain.EventDeleted, Table: "customer", Key: "X", Version: 3}); out.Result != domain.ResultDeleted || len(dv.calls) != 0 {
		t.Fatalf("outcome %+v, calls %v", out, dv.calls)
	}
}

func TestUnknownAndUnmappedTables(t *testing.T) {
	s, _ := newSyncer(&recorder{})
	if out := mustSync(t, s, upsert("spaceship", "1", 1, map[string]any{})); out.Failure.Kind != domain.KindInvalidEvent {
		t.Fatalf("unknown table: %+v", out.Failure)
	}
	if out := mustSync(t, s, upsert("vendor", "V1", 1, map[string]any{})); out.Failure.Kind != domain.KindMappingMissing || out.Failure.Class != domain.ClassSetup {
		t.Fatalf("known table without a mapping: %+v", out.Failure)
	}
}

func TestALookupValueThatCanNameNoRecordIsAnInvalidEvent(t *testing.T) {
	dv := &recorder{}
	s, _ := newSyncer(dv)
	out := mustSync(t, s, upsert("customer", "C1", 1, map[string]any{"number": "C1", "currencyCode": strings.Repeat("E", 9000)}))
	if out.Result != domain.ResultFailed || out.Failure.Kind != domain.KindInvalidEvent || len(dv.calls) != 0 {
		t.Fatalf("outcome %+v after %d calls, want invalid_event and no call", out, len(dv.calls))
	}
	if len(out.Failure.Message) > 300 {
		t.Fatalf("the message must not echo the value: %d bytes", len(out.Failure.Message))
	}
}

// A worker whose record lock was lost (its database connection broke) must not send a write
// again after a 412: the row may have moved on because the worker now holding the record wrote it.
func TestAWorkerThatLostItsLockDoesNotOverwriteTheNewHolder(t *testing.T) {
	dv := &recorder{}
	s, st := newSyncer(dv)
	mustSync(t, s, upsert("currency", "EUR", 1, map[string]any{"code": "EUR"}))
	st.lockLost = errors.New("connection reset")
	dv.errs = []error{dvErr(412, "0x80060882", "The version of the existing record doesn't match the RowVersion property provided.")}
	_, err := s.Sync(context.Background(), upsert("currency", "EUR", 2, map[string]any{"code": "EUR"}))
	if err == nil || !errors.Is(err, st.lockLost) {
		t.Fatalf("err = %v, want the lost lock (transient: the change is tried again)", err)
	}
	if last := dv.calls[len(dv.calls)-1]; last.op != "version" {
		t.Fatalf("last call %+v: nothing may be written after the lock is found lost", last)
	}
}
