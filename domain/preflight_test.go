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
	f := MissingPrivilegeGap(Principal{UserID: "u1", Team: "Integration team"}, PrivilegeNeed{Entity: "account", Verb: "Write", Tables: []string{"customer"}}, "prvWriteAccount")
	if !strings.Contains(f.Resolution, `team "Integration team"`) || !strings.Contains(f.Resolution, "not a role of the user") {
		t.Errorf("team resolution: %s", f.Resolution)
	}
	r := AppRestricted(nil)
	if r.Kind != KindAppRestricted || strings.Contains(r.Kind.Words(), "privilege") || !strings.Contains(r.Resolution, "not a missing privilege") {
		t.Errorf("restricted: %+v", r)
	}
	c := Classifier{}.Classify(&DataverseError{Status: 403, Code: "0x80095ffc", Message: "Access to Dataverse API is restricted for this application Id : 'x'."})
	if c.Kind != KindAppRestricted || c.Class != ClassSetup {
		t.Errorf("classified as %s/%s", c.Class, c.Kind)
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
	if failed != 1 || out.Table != PreflightTable || !slices.Equal(out.Gaps, []string{"account/prvCreateAccount"}) || !out.At.Equal(at) || out.Checked != rep.Checked {
		t.Fatalf("failed checks %d, outcome %+v", failed, out)
	}
	if out := Preflight(ms, preflightInput(ms)).Outcome(at); out.Gaps == nil || len(out.Gaps) != 0 {
		t.Fatalf("a passing check's gaps = %#v, want an empty list (it resolves every open one)", out.Gaps)
	}
}
