package emulator_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"

	"golang.org/x/oauth2/clientcredentials"

	"github.com/dvsync/dvsync/infra/emulator"
)

// code is the Dataverse error code of an answer, or "" for a success.
func code(out map[string]any) string {
	e, _ := out["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

// expect checks the status and error code of one request.
func (a *api) expect(status int, wantCode, method, path, body string, hdr ...string) map[string]any {
	a.t.Helper()
	resp, out := a.do(method, path, body, hdr...)
	if resp.StatusCode != status || code(out) != wantCode {
		a.t.Fatalf("%s %s %s: %d %v, want %d %q", method, path, body, resp.StatusCode, out, status, wantCode)
	}
	return out
}

// clientOf signs in as an app.
func (a *api) clientOf(app emulator.App) *http.Client {
	cfg := clientcredentials.Config{ClientID: app.ClientID, ClientSecret: app.ClientSecret,
		TokenURL: a.srv.URL + "/" + emulator.DefaultTenant + "/oauth2/v2.0/token"}
	return cfg.Client(context.Background())
}

func (a *api) checkIndexes() {
	a.t.Helper()
	if err := a.emu.IndexesMatchRows(); err != nil {
		a.t.Fatal(err)
	}
}

const (
	keyTaken  = "0x80060892" // DuplicateRecordEntityKey
	keyAbsent = "0x80060891" // RecordNotFoundByEntityKey
)

func TestAlternateKeysFollowCreatesUpdatesAndDeletes(t *testing.T) {
	a := newAPI(t)
	first := a.expect(201, "", "POST", "accounts", `{"name":"First","accountnumber":"K1"}`, "Prefer", "return=representation")
	id := first["accountid"].(string)
	a.expect(412, keyTaken, "POST", "accounts", `{"name":"Second","accountnumber":"K1"}`)
	// Text keys compare as the database's collation does, without regard to case.
	a.expect(412, keyTaken, "POST", "accounts", `{"name":"Second","accountnumber":"k1"}`)
	a.expect(200, "", "GET", "accounts(accountnumber='K1')", "")
	if out := a.expect(200, "", "GET", "accounts(accountnumber='k1')", ""); out["accountid"] != id {
		t.Fatalf("k1 found %v, want %s", out["accountid"], id)
	}

	// An update moves the row to its new key value and frees the old one.
	a.expect(204, "", "PATCH", "accounts("+id+")", `{"accountnumber":"K2"}`, "If-Match", "*")
	a.expect(404, keyAbsent, "GET", "accounts(accountnumber='K1')", "")
	if out := a.expect(200, "", "GET", "accounts(accountnumber='K2')", ""); out["accountid"] != id {
		t.Fatalf("K2 found %v, want %s", out["accountid"], id)
	}
	a.expect(204, "", "POST", "accounts", `{"name":"Takes K1","accountnumber":"K1"}`)
	a.expect(412, keyTaken, "POST", "accounts", `{"name":"Wants K2","accountnumber":"K2"}`)
	// A row keeps its own key value when written again.
	a.expect(204, "", "PATCH", "accounts(accountnumber='K2')", `{"name":"Still K2","accountnumber":"K2"}`, "If-Match", "*")

	// A change behind the client's back moves the key too.
	req, _ := http.NewRequest("PATCH", a.srv.URL+"/_emulator/rows/accounts/"+id, strings.NewReader(`{"accountnumber":"K3"}`))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 204 {
		t.Fatalf("admin change: %v %v", err, resp)
	}
	a.expect(404, keyAbsent, "GET", "accounts(accountnumber='K2')", "")
	a.expect(200, "", "GET", "accounts(accountnumber='K3')", "")

	// A deleted row's key value is free again.
	a.expect(204, "", "DELETE", "accounts(accountnumber='K3')", "")
	a.expect(404, keyAbsent, "GET", "accounts(accountnumber='K3')", "")
	a.expect(204, "", "POST", "accounts", `{"name":"Takes K3","accountnumber":"K3"}`)
	// Rows without a key value do not collide, and a null key addresses no row.
	a.expect(204, "", "POST", "accounts", `{"name":"No number"}`)
	a.expect(204, "", "POST", "accounts", `{"name":"No number either"}`)
	a.expect(404, keyAbsent, "GET", "accounts(accountnumber=null)", "")
	a.checkIndexes()

	a.emu.Reset()
	a.c = a.clientOf(emulator.DefaultApp) // a reset forgets the tokens issued
	a.expect(204, "", "POST", "accounts", `{"name":"After reset","accountnumber":"K1"}`)
	a.checkIndexes()
}

func TestDuplicateRulesCompareWithoutCase(t *testing.T) {
	a := newAPI(t)
	detect := []string{"MSCRM.SuppressDuplicateDetection", "false"}
	orig := a.expect(201, "", "POST", "accounts", `{"name":"Contoso"}`, "Prefer", "return=representation")
	a.expect(500, "0x80040333", "POST", "accounts", `{"name":"CONTOSO"}`, detect...)
	a.expect(204, "", "PATCH", "accounts("+orig["accountid"].(string)+")", `{"name":"Contoso"}`, detect...) // itself is no duplicate
	a.expect(204, "", "POST", "accounts", `{"name":"CONTOSO"}`)                                             // detection is off by default
	a.expect(204, "", "PATCH", "accounts("+orig["accountid"].(string)+")", `{"name":"Fabrikam"}`)
	a.expect(500, "0x80040333", "POST", "accounts", `{"name":"contoso"}`, detect...) // the second Contoso still counts
	a.expect(500, "0x80040333", "POST", "accounts", `{"name":"FABRIKAM"}`, detect...)
	a.expect(204, "", "POST", "accounts", `{"name":"Northwind"}`, detect...)
	// The Kelvin sign folds to k, as strings.EqualFold has it.
	a.expect(204, "", "POST", "contacts", `{"emailaddress1":"kim@example.com"}`)
	a.expect(500, "0x80040333", "POST", "contacts", `{"emailaddress1":"\u212Aim@EXAMPLE.com"}`, detect...)
	a.checkIndexes()
}

func TestFailedChangeSetRestoresRowsAndKeys(t *testing.T) {
	a := newAPI(t)
	kept := a.expect(201, "", "POST", "accounts", `{"name":"Kept","accountnumber":"A1"}`, "Prefer", "return=representation")
	gone := a.expect(201, "", "POST", "accounts", `{"name":"Deleted, then restored","accountnumber":"A2"}`, "Prefer", "return=representation")
	body, ct := batch([]string{
		"PATCH accounts(" + kept["accountid"].(string) + ") HTTP/1.1\nContent-Type: application/json\nIf-Match: *\n\n{\"accountnumber\":\"A9\",\"name\":\"Renamed\"}",
		"DELETE accounts(" + gone["accountid"].(string) + ") HTTP/1.1\n\n",
		"POST accounts HTTP/1.1\nContent-Type: application/json\n\n{\"name\":\"New\",\"accountnumber\":\"A2\"}",
		"POST uomschedules HTTP/1.1\nContent-Type: application/json\n\n{\"name\":\"Box\",\"baseuomname\":\"Piece\"}",
		"POST accounts HTTP/1.1\nContent-Type: application/json\n\n{\"name\":\"Breaks the key\",\"accountnumber\":\"A9\"}",
	})
	resp, got := a.batch(body, ct)
	if resp.StatusCode != 412 || len(got) != 1 {
		t.Fatalf("a change set whose last request fails: %d %v", resp.StatusCode, got)
	}
	if out := a.expect(200, "", "GET", "accounts(accountnumber='A1')", ""); out["name"] != "Kept" || out["@odata.etag"] != kept["@odata.etag"] {
		t.Fatalf("the updated row after the rollback: %v", out)
	}
	a.expect(404, keyAbsent, "GET", "accounts(accountnumber='A9')", "")
	if out := a.expect(200, "", "GET", "accounts(accountnumber='A2')", ""); out["accountid"] != gone["accountid"] {
		t.Fatalf("A2 after the rollback is %v, want the deleted row back", out)
	}
	for _, set := range []string{"accounts", "uomschedules", "uoms"} {
		rows, _ := a.emu.Rows(set)
		if want := map[string]int{"accounts": 2}[set]; len(rows) != want {
			t.Errorf("%d %s after the rollback, want %d", len(rows), set, want)
		}
	}
	a.checkIndexes()
}

func TestFailedBulkActionRestoresRowsAndKeys(t *testing.T) {
	a := newAPI(t)
	a.expect(204, "", "POST", "accounts", `{"name":"Before","accountnumber":"B1"}`)
	target := func(key, name string) string {
		return `{"@odata.type":"Microsoft.Dynamics.CRM.account","@odata.id":"accounts(accountnumber='` + key + `')","name":"` + name + `"}`
	}
	// Inside a change set too: the bulk action's own rollback nests in the change set's.
	bad := `{"Targets":[` + target("B1", "Changed") + `,` + target("B2", "New") + `,` + target("B3", strings.Repeat("x", 161)) + `]}`
	a.expect(400, "0x80044331", "POST", "accounts/Microsoft.Dynamics.CRM.UpsertMultiple", bad)
	body, ct := batch([]string{
		"POST accounts HTTP/1.1\nContent-Type: application/json\n\n{\"name\":\"In the change set\",\"accountnumber\":\"B4\"}",
		"POST accounts/Microsoft.Dynamics.CRM.UpsertMultiple HTTP/1.1\nContent-Type: application/json\n\n" + bad,
	})
	if resp, got := a.batch(body, ct); resp.StatusCode != 400 || len(got) != 1 {
		t.Fatalf("a change set with a failing bulk action: %d %v", resp.StatusCode, got)
	}
	if out := a.expect(200, "", "GET", "accounts(accountnumber='B1')", ""); out["name"] != "Before" {
		t.Fatalf("B1 after the failed upserts: %v", out)
	}
	for _, k := range []string{"B2", "B3", "B4"} {
		a.expect(404, keyAbsent, "GET", "accounts(accountnumber='"+k+"')", "")
	}
	a.checkIndexes()
}

// A definition reload may add a key that rows written before it break; they stay, and the key
// holds for every write after it.
func TestReloadedDefinitionsIndexExistingRows(t *testing.T) {
	a := newAPI(t)
	a.expect(204, "", "POST", "contacts", `{"lastname":"One","emailaddress1":"same@example.com"}`)
	a.expect(204, "", "POST", "contacts", `{"lastname":"Two","emailaddress1":"same@example.com"}`)
	a.expect(204, "", "POST", "contacts", `{"lastname":"Three","emailaddress1":"other@example.com"}`)

	raw, err := os.ReadFile("definitions/dataverse.json")
	if err != nil {
		t.Fatal(err)
	}
	var defs struct {
		Entities []map[string]any `json:"entities"`
	}
	if err := json.Unmarshal(raw, &defs); err != nil {
		t.Fatal(err)
	}
	var contact map[string]any
	for _, e := range defs.Entities {
		if e["logicalName"] == "contact" {
			contact = e
		}
	}
	contact["alternateKeys"] = [][]string{{"emailaddress1"}}
	file, _ := json.Marshal(map[string]any{"entities": []any{contact}})
	if err := a.emu.LoadDefinitions(file); err != nil {
		t.Fatal(err)
	}
	a.expect(412, keyTaken, "POST", "contacts", `{"lastname":"Four","emailaddress1":"other@example.com"}`)
	a.expect(412, keyTaken, "POST", "contacts", `{"lastname":"Five","emailaddress1":"same@example.com"}`)
	if out := a.expect(200, "", "GET", "contacts(emailaddress1='other@example.com')", ""); out["lastname"] != "Three" {
		t.Fatalf("found %v by the new key", out)
	}
	a.expect(204, "", "POST", "contacts", `{"lastname":"Six","emailaddress1":"new@example.com"}`)
	a.checkIndexes()
}
