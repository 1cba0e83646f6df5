package emulator_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// nextPath turns an @odata.nextLink into a path for api.do; "" when there is none.
func nextPath(out map[string]any) string {
	next, ok := out["@odata.nextLink"].(string)
	if !ok {
		return ""
	}
	u, _ := url.Parse(next)
	return strings.TrimPrefix(u.Path, "/api/data/v9.2/") + "?" + u.RawQuery
}

func TestPagingCookieKeepsTheOrderAcrossNullsAndTies(t *testing.T) {
	a := newAPI(t)
	// Two rows without a city and three with the same city: the cookie must carry the id to
	// break the tie, and read a null back as a null.
	for i, city := range []string{"", "Oslo", "", "Oslo", "Oslo"} {
		body := fmt.Sprintf(`{"name":"R%d"}`, i)
		if city != "" {
			body = fmt.Sprintf(`{"name":"R%d","address1_city":%q}`, i, city)
		}
		a.expect(204, "", "POST", "accounts", body)
	}
	want, _ := a.emu.Rows("accounts")
	path, seen := "accounts?$select=name,address1_city&$orderby=address1_city%20desc", []string{}
	for pages := 0; path != ""; pages++ {
		if pages > 5 {
			t.Fatalf("paging does not end: %v", seen)
		}
		resp, out := a.do("GET", path, "", "Prefer", "odata.maxpagesize=2")
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %v", path, resp.StatusCode, out)
		}
		seen = append(seen, names(out)...)
		path = nextPath(out)
	}
	if len(seen) != len(want) || strings.Join(seen[:3], "") != "R1R3R4" {
		t.Fatalf("pages gave %v; want the three Oslo rows in creation order, then the two without a city", seen)
	}
}

func TestSkipTokenThatIsNoPagingCookieIs400(t *testing.T) {
	a := newAPI(t)
	resp, out := a.do("GET", "accounts?$skiptoken=2", "")
	if resp.StatusCode != 400 || out["error"].(map[string]any)["code"] != "0x0" {
		t.Fatalf("%d %v", resp.StatusCode, out)
	}
}

func TestNestedExpandOfLookups(t *testing.T) {
	a := newAPI(t)
	sched := a.expect(201, "", "POST", "uomschedules", `{"name":"Weight","baseuomname":"kg"}`, "Prefer", "return=representation")["uomscheduleid"].(string)
	_, units := a.do("GET", "uoms?$select=name&$filter=_uomscheduleid_value%20eq%20"+sched, "")
	unit := units["value"].([]any)[0].(map[string]any)["uomid"].(string)
	id := a.expect(201, "", "POST", "products", fmt.Sprintf(`{"name":"Flour","defaultuomid@odata.bind":"/uoms(%s)"}`, unit), "Prefer", "return=representation")["productid"].(string)
	_, out := a.do("GET", "products("+id+")?$select=name&$expand=defaultuomid($select=name;$expand=uomscheduleid($select=name))", "")
	uom, _ := out["defaultuomid"].(map[string]any)
	sch, _ := uom["uomscheduleid"].(map[string]any)
	if uom["name"] != "kg" || sch["name"] != "Weight" || uom["quantity"] != nil {
		t.Fatalf("nested $expand: %v", out)
	}
	if ctx, _ := out["@odata.context"].(string); !strings.HasSuffix(ctx, "#products(name,defaultuomid(name,uomscheduleid(name)))/$entity") {
		t.Fatalf("@odata.context = %q", ctx)
	}
	resp, out := a.do("GET", "products("+id+")?$expand=defaultuomid($filter=name%20eq%20'kg')", "")
	if resp.StatusCode != 400 {
		t.Fatalf("$filter in the $expand of a lookup: %d %v", resp.StatusCode, out)
	}
	resp, out = a.do("GET", "products("+id+")?$expand=defaultuomid($select=nosuch)", "")
	if msg, _ := out["error"].(map[string]any)["message"].(string); resp.StatusCode != 400 || msg != "Could not find a property named 'nosuch' on type 'Microsoft.Dynamics.CRM.uom'." {
		t.Fatalf("unknown column in an expansion: %d %v", resp.StatusCode, out)
	}
}

func TestAnnotationsOnlyWhenAskedAndOnExpandedRows(t *testing.T) {
	a := newAPI(t)
	contact := a.expect(201, "", "POST", "contacts", `{"firstname":"Rafel","lastname":"Shillo"}`, "Prefer", "return=representation")["contactid"].(string)
	id := a.expect(201, "", "POST", "accounts", fmt.Sprintf(`{"name":"Contoso","paymenttermscode":2,"primarycontactid@odata.bind":"/contacts(%s)"}`, contact),
		"Prefer", "return=representation")["accountid"].(string)
	const fv = "@OData.Community.Display.V1.FormattedValue"
	resp, out := a.do("GET", "accounts("+id+")?$select=paymenttermscode,_primarycontactid_value&$expand=primarycontactid($select=createdon)", "",
		"Prefer", `odata.include-annotations="OData.Community.Display.V1.FormattedValue"`)
	if out["paymenttermscode"+fv] != "2% 10, Net 30" || out["_primarycontactid_value"+fv] != "Rafel Shillo" {
		t.Fatalf("formatted values: %v", out)
	}
	if _, ok := out["_primarycontactid_value@Microsoft.Dynamics.CRM.lookuplogicalname"]; ok {
		t.Fatalf("an annotation that was not asked for: %v", out)
	}
	if exp, _ := out["primarycontactid"].(map[string]any); exp["createdon"+fv] == nil {
		t.Fatalf("the expanded row has no formatted values: %v", out)
	}
	if got := resp.Header.Get("Preference-Applied"); got != `odata.include-annotations="OData.Community.Display.V1.FormattedValue"` {
		t.Fatalf("Preference-Applied = %q", got)
	}
	_, out = a.do("GET", "accounts("+id+")?$select=paymenttermscode", "")
	if _, ok := out["paymenttermscode"+fv]; ok {
		t.Fatalf("annotations without the preference: %v", out)
	}
	resp, out = a.do("GET", "accounts("+id+")?$select=name", "", "Prefer", `odata.include-annotations="*"`, "If-None-Match", out["@odata.etag"].(string))
	if resp.StatusCode != 200 || out["name"] != "Contoso" {
		t.Fatalf("a conditional GET with annotations answered %d %v; Dataverse answers 304 only without them", resp.StatusCode, out)
	}
}

func TestWriteWithUnknownSelectWritesNothing(t *testing.T) {
	a := newAPI(t)
	resp, out := a.do("POST", "accounts?$select=nosuch", `{"name":"Never"}`, "Prefer", "return=representation")
	if rows, _ := a.emu.Rows("accounts"); resp.StatusCode != 400 || len(rows) != 0 {
		t.Fatalf("%d %v, %d rows", resp.StatusCode, out, len(rows))
	}
}

func TestCountSegmentFiltersAndNeedsAKnownProperty(t *testing.T) {
	a := newAPI(t)
	a.seed("A1", "A2", "A3")
	get := func(path string) (int, string) {
		req, _ := http.NewRequest("GET", a.srv.URL+"/api/data/v9.2/"+path, nil)
		resp, err := a.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if status, body := get("accounts/$count?$filter=address1_city%20eq%20'Oslo'"); status != 200 || body != "2" {
		t.Fatalf("%d %q", status, body)
	}
	if status, body := get("accounts/$count?$filter=nosuch%20eq%201"); status != 400 || !strings.Contains(body, "Could not find a property named 'nosuch'") {
		t.Fatalf("%d %q", status, body)
	}
}

func TestBatchOverTheLimitRunsNothing(t *testing.T) {
	a := newAPI(t)
	reqs := make([]string, 1001)
	for i := range reqs {
		reqs[i] = fmt.Sprintf("POST accounts HTTP/1.1\nContent-Type: application/json\n\n{\"name\":\"B%d\"}", i)
	}
	body, ct := batch(reqs[:500], reqs[500:])
	resp, raw := a.postBatch(body, ct)
	if rows, _ := a.emu.Rows("accounts"); resp.StatusCode != 400 || len(rows) != 0 || !strings.Contains(string(raw), "1000") {
		t.Fatalf("%d %s, %d rows", resp.StatusCode, raw, len(rows))
	}
}

func TestTokenLifetimeAdmin(t *testing.T) {
	a := newAPI(t)
	post := func(body string) int {
		resp, err := http.Post(a.srv.URL+"/_emulator/tokens/lifetime", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := post(`{"lifetime":"0s"}`); got != 400 {
		t.Fatalf("a zero lifetime answered %d", got)
	}
	if got := post(`{"lifetime":"1ns"}`); got != 204 {
		t.Fatalf("%d", got)
	}
	// a.c fetches its token at its first request, after the change.
	req, _ := http.NewRequest("GET", a.srv.URL+"/api/data/v9.2/accounts", nil)
	resp, err := a.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 401 || len(body) != 0 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer authorization_uri=https://login.microsoftonline.com/") {
		t.Fatalf("an expired token answered %d %q %v", resp.StatusCode, body, resp.Header)
	}
}
