package domain

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func preflightInput(ms Mappings) PreflightInput {
	in := PreflightInput{Principal: Principal{UserID: "u1"}, Privileges: map[string]bool{}, Entities: map[string]EntityInfo{}, BaseCurrency: "USD"}
	for _, t := range ms.Tables() {
		m := ms[t]
		schema := strings.ToUpper(m.Entity[:1]) + m.Entity[1:]
		info := EntityInfo{Exists: true, SchemaName: schema, Attributes: map[string]AttributeInfo{}}
		for _, f := range m.Fields {
			typ := map[FieldType]string{TypeString: "String", TypeNumber: "Decimal", TypeInteger: "Integer", TypeBoolean: "Boolean"}[f.Type]
			info.Attributes[f.Attribute] = AttributeInfo{Type: typ, MaxLength: 100}
		}
		for _, l := range m.Lookups {
			info.Attributes[l.Bind] = AttributeInfo{Type: "Lookup"}
		}
		in.Entities[m.Entity] = info
		for _, v := range []string{"Create", "Read", "Write", "Delete", "Append", "AppendTo"} {
			in.Privileges["prv"+v+schema] = true
		}
	}
	return in
}

func TestRequiredPrivileges(t *testing.T) {
	ms := DefaultMappings()
	got := map[string]bool{}
	for _, p := range RequiredPrivileges(ms) {
		got[p.Entity+"/"+p.Verb] = true
	}
	for _, want := range []string{"account/Create", "account/Read", "account/Write", "account/Append", "account/AppendTo", "transactioncurrency/AppendTo"} {
		if !got[want] {
			t.Errorf("%s is not required", want)
		}
	}
	if got["account/Delete"] {
		t.Error("Delete on account is required though its mapping deactivates")
	}
	m := ms["customer"]
	m.OnDelete = DeleteRow
	ms["customer"] = m
	if !slicesHas(RequiredPrivileges(ms), "account", "Delete") {
		t.Error("a mapping that deletes rows does not require Delete")
	}
}

func slicesHas(ps []PrivilegeNeed, entity, verb string) bool {
	for _, p := range ps {
		if p.Entity == entity && p.Verb == verb {
			return true
		}
	}
	return false
}

func TestPreflightFindsEachGap(t *testing.T) {
	ms := DefaultMappings()
	in := preflightInput(ms)
	if rep := Preflight(ms, in); !rep.OK() || rep.Checked == 0 || rep.BaseCurrency != "USD" {
		t.Fatalf("a complete setup: %+v", rep)
	}
	delete(in.Privileges, "prvWriteAccount")
	acc := in.Entities["account"]
	delete(acc.Attributes, "telephone1")
	acc.Attributes["name"] = AttributeInfo{Type: "Integer"}
	rep := Preflight(ms, in)
	byKey := map[string]*Failure{}
	for _, g := range rep.Gaps {
		byKey[g.Key] = g.Failure
	}
	if f := byKey["account/prvWriteAccount"]; f == nil || f.Kind != KindMissingPrivilege || f.Class != ClassSetup ||
		!strings.Contains(f.Resolution, "prvWriteAccount") || !strings.Contains(f.Resolution, "application user u1") {
		t.Errorf("missing privilege: %+v", f)
	}
	if f := byKey["account.telephone1"]; f == nil || f.Kind != KindSchemaMismatch || f.Details["problem"] != "missing_column" {
		t.Errorf("missing column: %+v", f)
	}
	if f := byKey["account.name"]; f == nil || f.Kind != KindSchemaMismatch || f.Details["problem"] != "type" {
		t.Errorf("type mismatch: %+v", f)
	}
	if len(rep.Gaps) != 3 {
		t.Errorf("gaps: %v", byKey)
	}
	evs := rep.ErrorEvents(func(k string) string { return "id-" + k })
	if len(evs) != 3 || evs[0].Table != PreflightTable || evs[0].Stage != PreflightStage || evs[0].ID != "id-"+evs[0].Key {
		t.Errorf("error events: %+v", evs)
	}
}

func TestPreflightTeamAndRestrictedResolutions(t *testing.T) {
	need := PrivilegeNeed{Entity: "account", Verb: "Create", Tables: []string{"customer"}}
	basic := Role{ID: "r0", Name: "Basic User", Predefined: true}
	custom := Role{ID: "r1", Name: "DVSync Integration"}
	cases := []struct {
		name      string
		p         Principal
		want, not []string
		team      string
	}{
		{"own custom role", Principal{UserID: "u1", Roles: []Role{custom}},
			[]string{`role "DVSync Integration" of the application user u1`, "prvCreateAccount"}, []string{"team"}, ""},
		{"own predefined role only", Principal{UserID: "u1", Roles: []Role{basic}},
			[]string{"assign the application user u1 a custom security role with", `do not widen its predefined roles "Basic User"`}, []string{"team"}, ""},
		{"privileges through an owner team's custom role", Principal{UserID: "u1", Teams: []Team{
			{ID: "t0", Name: "BU default", Type: TeamOwner, Default: true, Roles: []Role{custom}},
			{ID: "t1", Name: "Sales integration", Type: TeamOwner, Roles: []Role{basic, custom}, Privileges: map[string]bool{"prvReadAccount": true}},
		}}, []string{`role "DVSync Integration" of the team "Sales integration"`, "privileges come from that team, not from a role of the user", "prvCreateAccount"},
			[]string{"BU default"}, "Sales integration"},
		{"an Entra group team with predefined roles only, beside a predefined own role", Principal{UserID: "u1", Roles: []Role{basic}, Teams: []Team{
			{ID: "t2", Name: "Access", Type: TeamAccess},
			{ID: "t3", Name: "Integration group", Type: TeamEntraGroup, Roles: []Role{basic}},
		}}, []string{`add a custom security role with the Create privilege on the account table (prvCreateAccount) at Organization level to the team "Integration group"`,
			`do not widen its predefined roles "Basic User"`}, []string{`team "Access"`}, "Integration group"},
		{"only a default team: advise the user", Principal{UserID: "u1", Teams: []Team{{ID: "t0", Name: "BU default", Default: true, Roles: []Role{custom}}}},
			[]string{"assign the application user u1 a custom security role"}, []string{"BU default"}, ""},
		{"roles not readable", Principal{UserID: "u1", RolesUnknown: true, Teams: []Team{{ID: "t1", Name: "Sales integration", Roles: []Role{custom}}}},
			[]string{"application user u1", "could not be read", "prvCreateAccount"}, []string{"Sales integration"}, ""},
	}
	for _, c := range cases {
		f := MissingPrivilegeGap(c.p, need, "prvCreateAccount")
		for _, w := range c.want {
			if !strings.Contains(f.Resolution, w) {
				t.Errorf("%s: resolution lacks %q:\n%s", c.name, w, f.Resolution)
			}
		}
		for _, w := range c.not {
			if strings.Contains(f.Resolution, w) {
				t.Errorf("%s: resolution has %q:\n%s", c.name, w, f.Resolution)
			}
		}
		if f.Details["team"] != c.team || f.Kind != KindMissingPrivilege {
			t.Errorf("%s: details %v, kind %s", c.name, f.Details, f.Kind)
		}
	}
	r := AppRestricted(nil)
	if r.Kind != KindAppRestricted || strings.Contains(r.Kind.Words(), "privilege") || !strings.Contains(r.Resolution, "not a missing privilege") {
		t.Errorf("restricted: %+v", r)
	}
	if rep := AppRestrictedReport(nil); len(rep.Gaps) != 1 || !slices.Equal(rep.Outcome(time.Now()).Keys, []string{ApplicationKey}) {
		t.Errorf("restricted report: %+v", rep)
	}
	c := Classifier{}.Classify(&DataverseError{Status: 403, Code: "0x80095ffc", Message: "Access to Dataverse API is restricted for this application Id : 'x'."})
	if c.Kind != KindAppRestricted || c.Class != ClassSetup {
		t.Errorf("classified as %s/%s", c.Class, c.Kind)
	}
}

func TestPreflightCurrencies(t *testing.T) {
	ms := DefaultMappings()
	in := preflightInput(ms)
	in.LocalCurrency = "usd"
	if rep := Preflight(ms, in); !rep.OK() || !slices.Contains(rep.Outcome(time.Now()).Keys, CurrencyBaseKey) {
		t.Fatalf("a local currency that is the base currency (in another case): %+v", rep)
	}
	in.LocalCurrency = "EUR"
	in.Coupled = []CoupledCurrency{{Table: "currency", Key: "GBP", RowID: "g", Code: "GBP", Found: true},
		{Table: "currency", Key: "USD", RowID: "u", Code: "USD", Found: true, Active: true}, {Table: "currency", Key: "DKK", RowID: "d"}}
	rep := Preflight(ms, in)
	byKey := map[string]*Failure{}
	for _, g := range rep.Gaps {
		byKey[g.Key] = g.Failure
	}
	if f := byKey[CurrencyBaseKey]; f == nil || f.Kind != KindCurrencySetup || f.Class != ClassSetup || f.Kind.Words() != "Currency setup" ||
		!strings.Contains(f.Message, "base currency is USD") || !strings.Contains(f.Resolution, "DVSYNC_LOCAL_CURRENCY=USD") {
		t.Errorf("base currency gap: %+v", f)
	}
	if f := byKey["currency/GBP"]; f == nil || f.Kind != KindCurrencySetup || !strings.Contains(f.Message, "inactive") {
		t.Errorf("inactive currency gap: %+v", f)
	}
	keys := rep.Outcome(time.Now()).Keys
	if len(rep.Gaps) != 2 || !slices.Contains(keys, "currency/USD") || slices.Contains(keys, "currency/DKK") {
		t.Errorf("gaps %v, keys %v", byKey, keys)
	}
	// No currency record of the local currency EUR is coupled: a warning, not a gap.
	if len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "No currency record of the local currency EUR is coupled") {
		t.Errorf("warnings %q; want one saying EUR is not coupled", rep.Warnings)
	}
	in.Coupled = append(in.Coupled, CoupledCurrency{Table: "currency", Key: "eur", RowID: "e", Code: "EUR", Found: true, Active: true})
	if rep := Preflight(ms, in); len(rep.Warnings) != 0 {
		t.Errorf("warnings %q with the local currency coupled; want none", rep.Warnings)
	}
	// The ledger down: the coupled currencies are skipped, and so are their keys.
	in.Coupled, in.CoupledSkipped = nil, "the ledger did not answer"
	rep = Preflight(ms, in)
	if keys := rep.Outcome(time.Now()).Keys; slices.Contains(keys, "currency/GBP") || len(rep.Skipped) != 1 || len(rep.Gaps) != 1 {
		t.Errorf("skipped: %+v, keys %v", rep, keys)
	}
	if ms.CurrencyTable() != "currency" {
		t.Errorf("currency table %q", ms.CurrencyTable())
	}
}

func TestPreflightMissingEntity(t *testing.T) {
	ms := DefaultMappings()
	in := preflightInput(ms)
	delete(in.Entities, "product")
	rep := Preflight(ms, in)
	if len(rep.Gaps) != 1 || rep.Gaps[0].Key != "product" || rep.Gaps[0].Failure.Details["problem"] != "missing_table" {
		t.Fatalf("gaps: %+v", rep.Gaps)
	}
}

func TestPreflightListsEveryCheckAndItsOutcomeNamesTheGaps(t *testing.T) {
	ms := DefaultMappings()
	in := preflightInput(ms)
	delete(in.Privileges, "prvCreateAccount")
	rep := Preflight(ms, in)
	if len(rep.Checks) != rep.Checked {
		t.Fatalf("%d checks listed, %d counted", len(rep.Checks), rep.Checked)
	}
	failed := 0
	for _, c := range rep.Checks {
		if !c.OK {
			failed++
			if c.Key != "account/prvCreateAccount" {
				t.Errorf("check %s failed", c.Key)
			}
		}
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	out := rep.Outcome(at)
	if failed != 1 || out.Table != PreflightTable || !slices.Equal(out.Gaps, []string{"account/prvCreateAccount"}) || !out.At.Equal(at) || out.Checked != rep.Checked ||
		len(out.Keys) != len(rep.Checks) || !slices.Contains(out.Keys, "account/prvCreateAccount") || !slices.Contains(out.Keys, ApplicationKey) {
		t.Fatalf("failed checks %d, outcome %+v", failed, out)
	}
	if out := Preflight(ms, preflightInput(ms)).Outcome(at); out.Gaps == nil || len(out.Gaps) != 0 {
		t.Fatalf("a passing check's gaps = %#v, want an empty list (it resolves every open one)", out.Gaps)
	}
}
