package domain_test

import (
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
)

// exists is Dataverse's answer to a create of a row that exists already.
func exists() error {
	return dvErr(412, "0x80040237", "A record with matching key values already exists.")
}

// An uncoupled record whose old row a person has coupled to another record: its next change
// meets that row (the create answers "already exists") and must not adopt it. It gets a new row;
// the other record's row is not written.
func TestAnUncoupledRecordDoesNotTakeBackARowAnotherRecordHas(t *testing.T) {
	dv := &recorder{}
	s, st := newSyncer(dv) // no mapping couples by match: the create claims nothing beforehand
	old := domain.DeterministicRowID("customer", "V")
	st.rows["customer/V"] = domain.Coupling{Table: "customer", Key: "V", Entity: "account", Version: 1, Status: domain.CouplingUncoupled, Exists: true}
	st.rows["customer/C"] = domain.Coupling{Table: "customer", Key: "C", Entity: "account", RowID: old, RowName: "Contoso",
		RowVersion: `W/"7"`, Version: 3, Status: domain.CouplingSynced, Exists: true}
	dv.errs = []error{exists()}
	out := mustSync(t, s, upsert("customer", "V", 2, map[string]any{"displayName": "Vendor V"}))
	if out.Result != domain.ResultSynced || out.RowID == old || out.RowID == uuid.Nil {
		t.Fatalf("outcome = %+v; want synced to a new row", out)
	}
	for _, c := range dv.calls {
		if c.row.ID == old && c.op != "create" {
			t.Fatalf("calls = %+v; nothing but the refused create may touch customer/C's row", dv.calls)
		}
	}
	if ops(dv.calls) != "create create" || dv.calls[1].row.ID != out.RowID {
		t.Fatalf("calls = %s; want the refused create, then the new row's", ops(dv.calls))
	}
	if c, _ := st.Coupling(context.Background(), "customer", "C"); c.RowID != old || c.RowVersion != `W/"7"` {
		t.Fatalf("customer/C = %+v; its coupling must not change", c)
	}
	if c, _ := st.Coupling(context.Background(), "customer", "V"); c.RowID != out.RowID || !c.Coupled() {
		t.Fatalf("customer/V = %+v; want coupled to its new row", c)
	}

	// A retry after a crash that left the new row created but not coupled adopts that row.
	st.rows["customer/V"] = domain.Coupling{Table: "customer", Key: "V", Entity: "account", Version: 1, Status: domain.CouplingUncoupled, Exists: true}
	dv.calls, dv.errs = nil, []error{exists(), exists()}
	again := mustSync(t, s, upsert("customer", "V", 2, map[string]any{"displayName": "Vendor V"}))
	if again.Result != domain.ResultSynced || again.RowID != out.RowID || ops(dv.calls) != "create create version update" || dv.calls[3].row.ID != out.RowID {
		t.Fatalf("retry: %+v after %s; want the new row adopted", again, ops(dv.calls))
	}
}

// The row a record of an entity's mapping without match fields creates is claimed before it is
// created when another mapping of the entity couples by match: that mapping's match could find
// the new row and take it before the record's coupling is stored.
func TestARowIsClaimedWhenAnotherMappingOfItsEntityMatches(t *testing.T) {
	dv := &recorder{}
	s, st := newMatchSyncer(dv) // customer -> account couples by match
	vendor := s.Mappings["customer"]
	vendor.Table = "vendor"
	vendor.Fields = append([]domain.FieldMapping(nil), vendor.Fields...)
	for i := range vendor.Fields {
		vendor.Fields[i].Match = nil
	}
	s.Mappings["vendor"] = vendor
	out := mustSync(t, s, upsert("vendor", "V1", 1, map[string]any{"number": "V1"}))
	own := domain.DeterministicRowID("vendor", "V1")
	if out.Result != domain.ResultSynced || out.RowID != own || st.claimed["account/"+own.String()] != 1 {
		t.Fatalf("outcome %+v, claims %v; want the vendor's row claimed before it is created", out, st.claimed)
	}
	// Another record's claim on it (the customer's match found it) makes the vendor wait.
	st.rowClaims["account/"+domain.DeterministicRowID("vendor", "V2").String()] = "customer/C9"
	if _, err := s.Sync(context.Background(), upsert("vendor", "V2", 1, map[string]any{"number": "V2"})); err == nil {
		t.Fatal("a row claimed by another record's sync: no error; want busy, tried again")
	}
}
