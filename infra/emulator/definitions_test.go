package emulator_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/dvsync/dvsync/infra/emulator"
)

func TestShippedDefinitionsCoverEveryMappedTable(t *testing.T) {
	sets := map[string]bool{}
	for _, e := range emulator.DefaultEntities() {
		sets[e.EntitySet] = true
		if len(e.Attributes) == 0 {
			t.Errorf("%s has no attributes", e.LogicalName)
		}
	}
	for _, set := range []string{"transactioncurrencies", "accounts", "contacts", "uomschedules", "uoms", "products"} {
		if !sets[set] {
			t.Errorf("no definition for %s", set)
		}
	}
}

const customTable = `{"entities": [{
  "logicalName": "new_project", "schemaName": "new_Project", "displayName": "Project", "entitySetName": "new_projects",
  "primaryIdAttribute": "new_projectid", "primaryNameAttribute": "new_name", "objectTypeCode": 10042,
  "attributes": [
    {"logicalName": "new_projectid", "type": "Uniqueidentifier"},
    {"logicalName": "new_name", "type": "String", "maxLength": 20},
    {"logicalName": "new_hours", "type": "Integer", "minValue": 0, "maxValue": 1000},
    {"logicalName": "new_customerid", "type": "Lookup", "targets": ["account"]}
  ]}]}`

func TestUserDefinitionsAddTables(t *testing.T) {
	a := newAPI(t)
	resp, err := http.Post(a.srv.URL+"/_emulator/definitions", "application/json", strings.NewReader(customTable))
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("loading definitions: %v %v", err, resp.Status)
	}
	a.do("POST", "accounts", `{"name":"Customer"}`)
	rows, _ := a.emu.Rows("accounts")
	body := `{"new_name":"Rollout","new_hours":40,"new_customerid@odata.bind":"/accounts(` + rows[0]["accountid"].(string) + `)"}`
	if resp, out := a.do("POST", "new_projects", body); resp.StatusCode != 204 {
		t.Fatalf("create in a loaded table: %d %v", resp.StatusCode, out)
	}
	resp2, out := a.do("POST", "new_projects", `{"new_name":"Too long","new_hours":4000}`)
	e, _ := out["error"].(map[string]any)
	if resp2.StatusCode != 400 || e["code"] != "0x8004432f" || !strings.Contains(e["message"].(string), "'new_hours'") {
		t.Fatalf("a number out of range: %d %v", resp2.StatusCode, out)
	}
	resp3, out := a.do("POST", "new_projects", `{"new_name":"Denied"}`)
	if resp3.StatusCode != 204 {
		t.Fatalf("the application user lacks privileges on a loaded table: %d %v", resp3.StatusCode, out)
	}
}

func TestBadDefinitionsNameWhatIsWrong(t *testing.T) {
	emu := emulator.New()
	for bad, want := range map[string]string{
		strings.Replace(customTable, `"targets": ["account"]`, `"targets": ["nosuchtable"]`, 1): `target "nosuchtable" is not defined`,
		strings.Replace(customTable, `"type": "Integer"`, `"type": "Int"`, 1):                   `type "Int" is not a Dataverse attribute type`,
		strings.Replace(customTable, `"displayName"`, `"label"`, 1):                             `unknown field "label"`,
	} {
		err := emu.LoadDefinitions([]byte(bad))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to say %q", err, want)
		}
	}
}
