package emulator_test

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// created creates a row through the Web API and returns its id.
func (a *api) created(set, body string) string {
	a.t.Helper()
	resp, out := a.do("POST", set, body)
	m := regexp.MustCompile(`\(([0-9a-f-]{36})\)$`).FindStringSubmatch(resp.Header.Get("OData-EntityId"))
	if resp.StatusCode != 204 || m == nil {
		a.t.Fatalf("create in %s: %d %v", set, resp.StatusCode, out)
	}
	return m[1]
}

// page GETs a path of the emulator without a token, as a browser opening a link does.
func (a *api) page(method, path string) (int, http.Header, string) {
	a.t.Helper()
	req, _ := http.NewRequest(method, a.srv.URL+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

func rowLink(entity, id string) string {
	return "/main.aspx?" + url.Values{"etn": {entity}, "id": {id}, "pagetype": {"entityrecord"}}.Encode()
}

// The links dvsync's page makes to a Dataverse row open a page of the row's columns, escaped,
// without a token; a lookup links to its row; a row or table that does not exist is a 404 that
// says so. Only GET: the page changes nothing, and the Web API still wants a token.
func TestRowViewShowsARowWithoutAToken(t *testing.T) {
	a := newAPI(t)
	cur := a.created("transactioncurrencies", `{"currencyname":"Euro","isocurrencycode":"EUR","currencysymbol":"€","exchangerate":1,"currencyprecision":2}`)
	acc := a.created("accounts", `{"name":"<script>alert(1)</script> Adatum","creditlimit":1000000,"transactioncurrencyid@odata.bind":"/transactioncurrencies(`+cur+`)"}`)

	status, h, body := a.page("GET", rowLink("account", acc))
	if status != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") || !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("the row page: %d %v", status, h)
	}
	if strings.Contains(body, "<script>") || !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt; Adatum") {
		t.Fatalf("the row's name is not escaped: %s", body)
	}
	for _, want := range []string{
		"<title>Account: &lt;script&gt;",
		`<tr><th scope="row">accountid</th><td>` + acc + `</td></tr>`,
		`<tr><th scope="row">creditlimit</th><td>1000000</td></tr>`,
		`<tr><th scope="row">_transactioncurrencyid_value</th><td><a href="` + strings.ReplaceAll(rowLink("transactioncurrency", cur), "&", "&amp;") + `">` + cur + `</a></td></tr>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the row page lacks %s:\n%s", want, body)
		}
	}
	// accountid first, then the primary name, then the others by name.
	if i, j, k := strings.Index(body, ">accountid<"), strings.Index(body, ">name<"), strings.Index(body, ">creditlimit<"); !(i < j && j < k) {
		t.Errorf("column order: accountid %d, name %d, creditlimit %d", i, j, k)
	}
	if status, _, body := a.page("GET", rowLink("transactioncurrency", cur)); status != 200 || !strings.Contains(body, "Currency: Euro") {
		t.Errorf("the lookup's row: %d %s", status, body)
	}

	for _, c := range []struct {
		path   string
		status int
		want   string
	}{
		{rowLink("account", "00000000-0000-0000-0000-0000000000ff"), 404, "There is no account row 00000000-0000-0000-0000-0000000000ff"},
		{rowLink("nosuchtable", acc), 404, `This emulator has no table &#34;nosuchtable&#34;`},
		{"/main.aspx?id=" + acc, 404, `no table &#34;&#34;`},
		{rowLink("account", "<b>not-a-guid"), 400, `&#34;&lt;b&gt;not-a-guid&#34; (id) is not a row id`},
	} {
		status, _, body := a.page("GET", c.path)
		if status != c.status || !strings.Contains(body, c.want) || strings.Contains(body, "<b>") {
			t.Errorf("GET %s: %d, want %d with %q:\n%s", c.path, status, c.status, c.want, body)
		}
	}
	if status, _, _ := a.page("POST", rowLink("account", acc)); status != http.StatusMethodNotAllowed {
		t.Errorf("POST to the row page: %d", status)
	}
	if status, _, _ := a.page("GET", "/api/data/v9.2/accounts("+acc+")"); status != 401 {
		t.Errorf("the Web API without a token: %d", status)
	}
}
