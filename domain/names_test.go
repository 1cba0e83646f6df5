package domain_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
)

func stageDetails(out domain.Outcome, name string) string {
	var d []string
	for _, st := range out.Stages {
		if st.Name == name {
			d = append(d, st.Detail)
		}
	}
	return strings.Join(d, "; ")
}

// The coupling remembers the primary name dvsync sent; a change without it keeps it, and the
// failure of a row deleted in Dataverse names the row by it.
func TestADeletedRowIsNamedByThePrimaryNameDvsyncSent(t *testing.T) {
	dv := &recorder{}
	s, st := newSyncer(dv)
	ctx := context.Background()
	mustSync(t, s, upsert("currency", "USD", 1, map[string]any{"code": "USD"}))
	mustSync(t, s, upsert("customer", "C1", 1, map[string]any{"number": "C1", "displayName": "Adatum Corporation"}))
	row := domain.DeterministicRowID("customer", "C1")
	if c, _ := st.Coupling(ctx, "customer", "C1"); c.RowName != "Adatum Corporation" {
		t.Fatalf("row name = %q after the create; want the name sent", c.RowName)
	}
	out := mustSync(t, s, upsert("customer", "C1", 2, map[string]any{"city": "Atlanta"}))
	if c, _ := st.Coupling(ctx, "customer", "C1"); c.RowName != "Adatum Corporation" {
		t.Fatalf("row name = %q after a change without the name; want it kept", c.RowName)
	}
	if got := stageDetails(out, "dataverse"); !strings.Contains(got, `update accounts(`+row.String()+`) "Adatum Corporation"`) {
		t.Errorf("dataverse stage %q does not name the row", got)
	}

	dv.errs = []error{fmt.Errorf("PATCH: %w", &domain.DataverseError{Status: 404, Code: "0x80040217", Message: "account With Id = " + row.String() + " Does Not Exist"})}
	out = mustSync(t, s, upsert("customer", "C1", 3, map[string]any{"city": "Boston"}))
	f := out.Failure
	want := fmt.Sprintf(`coupled to a deleted record (account "Adatum Corporation" (%s))`, row)
	if f == nil || f.Kind != domain.KindDestinationDeleted || !strings.Contains(f.Message, want) {
		t.Fatalf("failure = %+v; want a message containing %s", f, want)
	}
	if f.Details["row_name"] != "Adatum Corporation" || f.Details["row_id"] != row.String() {
		t.Errorf("details = %v; want the row's id and name", f.Details)
	}
	if c, _ := st.Coupling(ctx, "customer", "C1"); c.RowName != "Adatum Corporation" {
		t.Errorf("row name = %q after the failure; want it kept", c.RowName)
	}

	// A lookup names the dependency's row too.
	out = mustSync(t, s, upsert("contact", "P1", 1, map[string]any{"surname": "Smith", "companyNumber": "C1"}))
	if got := stageDetails(out, "lookup"); !strings.Contains(got, `companyNumber C1 -> accounts(`+row.String()+`) "Adatum Corporation"`) {
		t.Errorf("lookup stage %q does not name the account", got)
	}
}

// A record deleted at the source whose mapping reports it names the row it is still coupled to.
func TestSourceDeletedNamesTheRow(t *testing.T) {
	dv := &recorder{}
	s, _ := newSyncer(dv)
	mustSync(t, s, upsert("unitOfMeasure", "PCS", 1, map[string]any{"code": "PCS"}))
	out := mustSync(t, s, domain.ChangeEvent{ID: "d", Type: domain.EventDeleted, Table: "unitOfMeasure", Key: "PCS", Version: 2})
	row := domain.DeterministicRowID("unitOfMeasure", "PCS")
	want := fmt.Sprintf(`unitOfMeasure/PCS was deleted in the source but is still coupled to uomschedule "PCS" (%s).`, row)
	if out.Failure == nil || out.Failure.Kind != domain.KindSourceDeleted || out.Failure.Message != want {
		t.Fatalf("failure = %+v; want %q", out.Failure, want)
	}
}

// A record coupled by match without being synchronized takes the matched row's name; one that is
// synchronized takes the name it sends.
func TestAMatchedRowIsNamedByItsName(t *testing.T) {
	for _, tc := range []struct {
		noSync bool
		want   string
	}{{true, "US Dollar"}, {false, "Dollar (US)"}} {
		base := uuid.New()
		dv := &recorder{matches: map[string][]domain.FoundRow{"transactioncurrencies": {{ID: base, Name: "US Dollar"}}}}
		s, st := newMatchSyncer(dv)
		m := s.Mappings["currency"]
		m.Coupling.NoSync = tc.noSync
		s.Mappings["currency"] = m
		out := mustSync(t, s, upsert("currency", "USD", 1, map[string]any{"code": "USD", "displayName": "Dollar (US)"}))
		if c, _ := st.Coupling(context.Background(), "currency", "USD"); c.RowID != base || c.RowName != tc.want {
			t.Errorf("noSync %v: coupling %+v; want the row named %q", tc.noSync, c, tc.want)
		}
		if got := stageDetails(out, "couple"); !strings.Contains(got, `"US Dollar"`) {
			t.Errorf("noSync %v: couple stage %q does not name the matched row", tc.noSync, got)
		}
	}
}

func TestAlreadyCoupledNamesTheRow(t *testing.T) {
	row := uuid.New()
	dv := &recorder{matches: map[string][]domain.FoundRow{"accounts": {{ID: row, Name: "Adatum"}}}}
	s, _ := newMatchSyncer(dv)
	mustSync(t, s, upsert("customer", "C1", 1, map[string]any{"number": "C1"}))
	out := mustSync(t, s, upsert("customer", "C1-copy", 1, map[string]any{"number": "C1"}))
	if want := fmt.Sprintf(`already coupled to customer/C1 (account "Adatum" (%s))`, row); out.Failure == nil || !strings.Contains(out.Failure.Message, want) {
		t.Fatalf("failure = %+v; want %q", out.Failure, want)
	}
}

func TestANamedRowWithoutANameIsItsID(t *testing.T) {
	id := uuid.MustParse("7ba8c1d2-0000-4000-8000-000000000001")
	if got := (domain.NamedRow{Entity: "account", ID: id}).String(); got != "account "+id.String() {
		t.Errorf("without a name: %s", got)
	}
	if got := (domain.NamedRow{Entity: "account", ID: id, Name: `Say "hi"`}).String(); got != `account "Say \"hi\"" (`+id.String()+`)` {
		t.Errorf("with a quote in the name: %s", got)
	}
}
