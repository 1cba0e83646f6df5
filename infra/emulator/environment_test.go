package emulator_test

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/dvsync/dvsync/infra/emulator"
)

func TestStartsWithABaseCurrency(t *testing.T) {
	a := newAPI(t)
	resp, out := a.do("GET", "transactioncurrencies?$filter=isocurrencycode%20eq%20'USD'", "")
	rows, _ := out["value"].([]any)
	if resp.StatusCode != 200 || len(rows) != 1 {
		t.Fatalf("%d %v; want the USD base currency", resp.StatusCode, out)
	}
	usd := rows[0].(map[string]any)
	if usd["currencyname"] != "US Dollar" || usd["currencysymbol"] != "$" || usd["exchangerate"] != 1.0 {
		t.Fatalf("base currency = %v", usd)
	}
	if id, code := a.emu.BaseCurrency(); code != "USD" || id.String() != usd["transactioncurrencyid"] {
		t.Fatalf("BaseCurrency() = %s %s", id, code)
	}
	// Another base currency survives a reset; the old one is gone.
	if err := a.emu.SetBaseCurrency(emulator.Currency{ISOCode: "EUR", Name: "Euro", Symbol: "€"}); err != nil {
		t.Fatal(err)
	}
	a.emu.Reset()
	rowsNow, _ := a.emu.Rows("transactioncurrencies")
	if len(rowsNow) != 1 || rowsNow[0]["isocurrencycode"] != "EUR" {
		t.Fatalf("after SetBaseCurrency and Reset: %v", rowsNow)
	}
}

func TestSecondCurrencyWithTheSameISOCodeFails(t *testing.T) {
	a := newAPI(t)
	resp, out := a.do("POST", "transactioncurrencies", `{"isocurrencycode":"USD","currencyname":"Dollar again"}`)
	e, _ := out["error"].(map[string]any)
	if resp.StatusCode != 400 || e["code"] != "0x80048cf3" || !strings.Contains(e["message"].(string), "Cannot insert duplicate currency record") {
		t.Fatalf("%d %v; want 400 0x80048cf3", resp.StatusCode, out)
	}
	if resp, _ := a.do("POST", "transactioncurrencies", `{"isocurrencycode":"DKK","currencyname":"Krone"}`); resp.StatusCode != 204 {
		t.Fatalf("another code: %d", resp.StatusCode)
	}
	// Updating the existing currency through its key is no second currency.
	if resp, out := a.do("PATCH", "transactioncurrencies(isocurrencycode='USD')", `{"currencyname":"US-Dollar"}`, "If-Match", "*"); resp.StatusCode != 204 {
		t.Fatalf("update of USD: %d %v", resp.StatusCode, out)
	}
}

func TestSeedLoadsRowsWhole(t *testing.T) {
	a := newAPI(t)
	seed := `{"accounts":[{"accountid":"11111111-1111-1111-1111-111111111111","name":"Contoso","accountnumber":"C10000",
		"transactioncurrencyid@odata.bind":"/transactioncurrencies(22222222-2222-2222-2222-222222222222)"}],
		"transactioncurrency":[{"transactioncurrencyid":"22222222-2222-2222-2222-222222222222","isocurrencycode":"EUR","currencyname":"Euro"}]}`
	resp, err := http.Post(a.srv.URL+"/_emulator/seed", "application/json", strings.NewReader(seed))
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("seed: %v %v", resp, err)
	}
	row := a.emu.Row("accounts", mustUUID(t, "11111111-1111-1111-1111-111111111111"))
	if row["name"] != "Contoso" || row["_transactioncurrencyid_value"] != "22222222-2222-2222-2222-222222222222" {
		t.Fatalf("seeded account = %v", row)
	}
	// A file with a bad row loads nothing: here the second account breaks the accountnumber key.
	bad := `{"accounts":[{"name":"Fabrikam","accountnumber":"C20000"},{"name":"Contoso again","accountnumber":"C10000"}]}`
	if err := a.emu.LoadSeed([]byte(bad)); err == nil || !strings.Contains(err.Error(), "accounts row 2") {
		t.Fatalf("LoadSeed = %v; want the duplicate key of row 2", err)
	}
	if rows, _ := a.emu.Rows("accounts"); len(rows) != 1 {
		t.Fatalf("a failed seed left rows: %v", rows)
	}
	if err := a.emu.LoadSeed([]byte(`{"nosuchtable":[{}]}`)); err == nil {
		t.Fatal("an unknown table loaded")
	}
	if err := a.emu.IndexesMatchRows(); err != nil {
		t.Fatal(err)
	}
}

func TestRestrictedAppIsRefusedNotShortOfAPrivilege(t *testing.T) {
	a := newAPI(t)
	post := func(path string) {
		t.Helper()
		resp, err := http.Post(a.srv.URL+path, "application/json", nil)
		if err != nil || resp.StatusCode != 204 {
			t.Fatalf("%s: %v %v", path, resp, err)
		}
	}
	post("/_emulator/apps/" + emulator.DefaultApp.ClientID + "/restrict")
	resp, out := a.do("GET", "WhoAmI", "")
	e, _ := out["error"].(map[string]any)
	if resp.StatusCode != 403 || e["code"] != "0x80095ffc" || !strings.Contains(e["message"].(string), emulator.DefaultApp.ClientID) {
		t.Fatalf("%d %v; want 403 0x80095ffc naming the app", resp.StatusCode, out)
	}
	post("/_emulator/apps/" + emulator.DefaultApp.ClientID + "/unrestrict")
	if resp, _ := a.do("GET", "WhoAmI", ""); resp.StatusCode != 200 {
		t.Fatalf("after unrestrict: %d", resp.StatusCode)
	}
}

func TestWhoAmIAndPrivileges(t *testing.T) {
	a := newAPI(t)
	resp, who := a.do("GET", "WhoAmI", "")
	if resp.StatusCode != 200 || who["UserId"] != emulator.DefaultApp.UserID.String() || who["BusinessUnitId"] == nil || who["OrganizationId"] == nil {
		t.Fatalf("WhoAmI: %d %v", resp.StatusCode, who)
	}
	if err := a.emu.SetPrivilege(emulator.DefaultApp.UserID, "prvWriteAccount", false); err != nil {
		t.Fatal(err)
	}
	user := "systemusers(" + emulator.DefaultApp.UserID.String() + ")/Microsoft.Dynamics.CRM."
	resp, out := a.do("GET", user+"RetrieveUserPrivileges", "")
	privs, _ := out["RolePrivileges"].([]any)
	held := map[string]bool{}
	for _, p := range privs {
		m := p.(map[string]any)
		if m["Depth"] != "Global" || m["PrivilegeId"] == nil || m["BusinessUnitId"] != who["BusinessUnitId"] {
			t.Fatalf("privilege %v", m)
		}
		held[m["PrivilegeName"].(string)] = true
	}
	if resp.StatusCode != 200 || !held["prvCreateAccount"] || held["prvWriteAccount"] {
		t.Fatalf("RetrieveUserPrivileges: %d %v", resp.StatusCode, held)
	}
	resp, out = a.do("POST", "accounts", `{"name":"Target"}`, "Prefer", "return=representation")
	id, _ := out["accountid"].(string)
	if resp.StatusCode != 201 {
		t.Fatalf("create: %d %v", resp.StatusCode, out)
	}
	q := user + "RetrievePrincipalAccess(Target=@tid)?@tid=" + url.QueryEscape("{'@odata.id':'accounts("+id+")'}")
	resp, out = a.do("GET", q, "")
	if resp.StatusCode != 200 || out["AccessRights"] != "ReadAccess, AppendAccess, AppendToAccess, CreateAccess, DeleteAccess, AssignAccess" {
		t.Fatalf("RetrievePrincipalAccess: %d %v", resp.StatusCode, out)
	}
	if resp, _ := a.do("GET", "systemusers(00000000-0000-0000-0000-000000000001)/Microsoft.Dynamics.CRM.RetrieveUserPrivileges", ""); resp.StatusCode != 404 {
		t.Fatalf("unknown user: %d", resp.StatusCode)
	}
}

func TestEntityDefinitions(t *testing.T) {
	a := newAPI(t)
	resp, ent := a.do("GET", "EntityDefinitions(LogicalName='account')?$expand=Attributes", "")
	if resp.StatusCode != 200 || ent["EntitySetName"] != "accounts" || ent["PrimaryIdAttribute"] != "accountid" || ent["ObjectTypeCode"] != 1.0 {
		t.Fatalf("%d %v", resp.StatusCode, ent)
	}
	byName := map[string]map[string]any{}
	for _, x := range ent["Attributes"].([]any) {
		m := x.(map[string]any)
		byName[m["LogicalName"].(string)] = m
	}
	name := byName["name"]
	if name["AttributeType"] != "String" || name["MaxLength"] != 160.0 || name["@odata.type"] != "#Microsoft.Dynamics.CRM.StringAttributeMetadata" {
		t.Fatalf("name = %v", name)
	}
	cur := byName["transactioncurrencyid"]
	if cur["AttributeType"] != "Lookup" || cur["Targets"].([]any)[0] != "transactioncurrency" {
		t.Fatalf("transactioncurrencyid = %v", cur)
	}
	resp, list := a.do("GET", "EntityDefinitions(LogicalName='account')/Attributes", "")
	if resp.StatusCode != 200 || len(list["value"].([]any)) != len(byName) {
		t.Fatalf("/Attributes: %d %v", resp.StatusCode, list)
	}
	resp, out := a.do("GET", "EntityDefinitions(LogicalName='nosuch')", "")
	if e, _ := out["error"].(map[string]any); resp.StatusCode != 404 || e["code"] != "0x80041102" {
		t.Fatalf("unknown entity: %d %v", resp.StatusCode, out)
	}
}

// Each emulated environment has its own base currency row, as each provisioned Dataverse
// environment does; a saved one keeps its id when another emulator loads it, with no second row.
func TestEachEnvironmentsBaseCurrencyHasItsOwnIDKeptBySave(t *testing.T) {
	a, b := emulator.New(), emulator.New()
	idA, _ := a.BaseCurrency()
	idB, _ := b.BaseCurrency()
	if idA == idB {
		t.Fatalf("two environments share the base currency id %s", idA)
	}
	var saved bytes.Buffer
	if err := a.Save(&saved); err != nil {
		t.Fatal(err)
	}
	if err := b.Load(&saved); err != nil {
		t.Fatal(err)
	}
	rows, _ := b.Rows("transactioncurrencies")
	if id, _ := b.BaseCurrency(); id != idA || len(rows) != 1 || rows[0]["transactioncurrencyid"] != idA.String() {
		t.Fatalf("after loading: base %s, rows %v; want the saved base currency %s alone", id, rows, idA)
	}
}
