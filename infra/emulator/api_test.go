package emulator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2/clientcredentials"

	"github.com/dvsync/dvsync/infra/emulator"
)

type api struct {
	t   *testing.T
	srv *httptest.Server
	emu *emulator.Emulator
	c   *http.Client
}

func newAPI(t *testing.T) *api {
	emu := emulator.New()
	srv := httptest.NewServer(emu.Handler())
	t.Cleanup(srv.Close)
	cfg := clientcredentials.Config{ClientID: emulator.DefaultApp.ClientID, ClientSecret: emulator.DefaultApp.ClientSecret,
		TokenURL: srv.URL + "/" + emulator.DefaultTenant + "/oauth2/v2.0/token"}
	return &api{t: t, srv: srv, emu: emu, c: cfg.Client(context.Background())}
}

func (a *api) do(method, path string, body string, hdr ...string) (*http.Response, map[string]any) {
	a.t.Helper()
	req, _ := http.NewRequest(method, a.srv.URL+"/api/data/v9.2/"+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := a.c.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp, out
}

func (a *api) seed(names ...string) {
	for i, n := range names {
		body := fmt.Sprintf(`{"name":%q,"creditlimit":%d,"address1_city":"%s"}`, n, (i+1)*100, map[bool]string{true: "Oslo", false: "Bergen"}[i%2 == 0])
		if resp, out := a.do("POST", "accounts", body); resp.StatusCode != 204 {
			a.t.Fatalf("create %s: %d %v", n, resp.StatusCode, out)
		}
	}
}

func names(out map[string]any) []string {
	var n []string
	for _, v := range out["value"].([]any) {
		n = append(n, v.(map[string]any)["name"].(string))
	}
	return n
}

func TestFilterOrderByAndCount(t *testing.T) {
	a := newAPI(t)
	a.seed("Alpha", "Bravo", "Charlie", "Delta", "Echo")
	cases := []struct{ query, want string }{
		{"$filter=creditlimit gt 200 and creditlimit le 400", "Charlie,Delta"},
		{"$filter=address1_city eq 'oslo' or name eq 'Bravo'&$orderby=name desc", "Echo,Charlie,Bravo,Alpha"},
		{"$filter=not (address1_city eq 'Oslo')", "Bravo,Delta"},
		{"$filter=contains(name,'ar') or startswith(name,'E') or endswith(name,'ta')", "Charlie,Delta,Echo"},
		{"$filter=name ne 'Alpha' and accountnumber eq null&$top=2", "Bravo,Charlie"},
		{"$orderby=address1_city asc,creditlimit desc", "Delta,Bravo,Echo,Charlie,Alpha"},
	}
	for _, tc := range cases {
		resp, out := a.do("GET", "accounts?"+strings.ReplaceAll(tc.query, " ", "%20"), "")
		if got := strings.Join(names(out), ","); resp.StatusCode != 200 || got != tc.want {
			t.Errorf("%s: %d %s, want %s", tc.query, resp.StatusCode, got, tc.want)
		}
	}
	_, out := a.do("GET", "accounts?$count=true&$filter=address1_city%20eq%20'Oslo'", "")
	if out["@odata.count"] != 3.0 {
		t.Errorf("@odata.count = %v, want 3", out["@odata.count"])
	}
	resp, out := a.do("GET", "accounts?$filter=name%20eqq%20'x'", "")
	if resp.StatusCode != 400 || out["error"].(map[string]any)["code"] != "0x0" {
		t.Errorf("a bad filter answered %d %v", resp.StatusCode, out)
	}
}

func TestPagingFollowsNextLinks(t *testing.T) {
	a := newAPI(t)
	a.seed("A1", "A2", "A3", "A4", "A5")
	path, seen, pages := "accounts?$select=name", []string{}, 0
	for path != "" {
		resp, out := a.do("GET", path, "", "Prefer", "odata.maxpagesize=2")
		if resp.Header.Get("Preference-Applied") != "odata.maxpagesize=2" {
			t.Fatalf("Preference-Applied = %q", resp.Header.Get("Preference-Applied"))
		}
		seen = append(seen, names(out)...)
		pages++
		path = ""
		if next, ok := out["@odata.nextLink"].(string); ok {
			u, _ := url.Parse(next)
			path = strings.TrimPrefix(u.Path, "/api/data/v9.2/") + "?" + u.RawQuery
		}
	}
	if pages != 3 || strings.Join(seen, ",") != "A1,A2,A3,A4,A5" {
		t.Fatalf("%d pages: %v", pages, seen)
	}
}

// batch builds a $batch body: top-level parts, and change sets as []string of requests.
func batch(parts ...any) (string, string) {
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	req := func(mw *multipart.Writer, id int, text string) {
		h := map[string][]string{"Content-Type": {"application/http"}, "Content-Transfer-Encoding": {"binary"}}
		if id > 0 {
			h["Content-ID"] = []string{fmt.Sprint(id)}
		}
		p, _ := mw.CreatePart(h)
		_, _ = io.WriteString(p, strings.ReplaceAll(text, "\n", "\r\n"))
	}
	for _, p := range parts {
		switch v := p.(type) {
		case string:
			req(w, 0, v)
		case []string:
			var cs bytes.Buffer
			cw := multipart.NewWriter(&cs)
			for i, r := range v {
				req(cw, i+1, r)
			}
			_ = cw.Close()
			pw, _ := w.CreatePart(map[string][]string{"Content-Type": {"multipart/mixed; boundary=" + cw.Boundary()}})
			_, _ = pw.Write(cs.Bytes())
		}
	}
	_ = w.Close()
	return b.String(), "multipart/mixed; boundary=" + w.Boundary()
}

// statuses reads the status line of every response part, change sets flattened.
func statuses(t *testing.T, resp *http.Response, body []byte) []string {
	var out []string
	eachPart(t, resp, body, func(p io.Reader) {
		raw, _ := io.ReadAll(p)
		out = append(out, strings.SplitN(string(raw), "\r\n", 2)[0])
	})
	return out
}

func (a *api) batch(body, ct string, prefer ...string) (*http.Response, []string) {
	a.t.Helper()
	resp, raw := a.postBatch(body, ct, prefer...)
	return resp, statuses(a.t, resp, raw)
}

func TestBatchChangeSetWithContentIDReference(t *testing.T) {
	a := newAPI(t)
	body, ct := batch([]string{
		"POST /api/data/v9.2/transactioncurrencies HTTP/1.1\nContent-Type: application/json\n\n{\"isocurrencycode\":\"EUR\"}",
		"POST accounts HTTP/1.1\nContent-Type: application/json\n\n{\"name\":\"Ref\",\"transactioncurrencyid@odata.bind\":\"$1\"}",
	}, "GET /api/data/v9.2/accounts?$select=name HTTP/1.1\n\n")
	resp, got := a.batch(body, ct)
	if resp.StatusCode != 200 || strings.Join(got, "|") != "HTTP/1.1 204 No Content|HTTP/1.1 204 No Content|HTTP/1.1 200 OK" {
		t.Fatalf("%d %v", resp.StatusCode, got)
	}
	accounts, _ := a.emu.Rows("accounts")
	currencies, _ := a.emu.Rows("transactioncurrencies")
	// The base currency comes first: the change set's currency is the newest.
	if len(accounts) != 1 || accounts[0]["_transactioncurrencyid_value"] != currencies[len(currencies)-1]["transactioncurrencyid"] {
		t.Fatalf("the $1 reference was not bound: %v", accounts)
	}
}

func TestBatchChangeSetRollsBackAndStopsWithoutContinueOnError(t *testing.T) {
	a := newAPI(t)
	body, ct := batch([]string{
		"POST accounts HTTP/1.1\nContent-Type: application/json\n\n{\"name\":\"Kept?\"}",
		"POST accounts HTTP/1.1\nContent-Type: application/json\n\n{\"nosuch\":1}",
	}, "POST accounts HTTP/1.1\nContent-Type: application/json\n\n{\"name\":\"After\"}")
	resp, got := a.batch(body, ct)
	if rows, _ := a.emu.Rows("accounts"); len(rows) != 0 || resp.StatusCode != 400 || len(got) != 1 {
		t.Fatalf("status %d, parts %v, %d rows; want 400, one error part, nothing kept", resp.StatusCode, got, len(rows))
	}
	resp, got = a.batch(body, ct, "odata.continue-on-error")
	rows, _ := a.emu.Rows("accounts")
	if resp.StatusCode != 200 || len(got) != 2 || len(rows) != 1 || rows[0]["name"] != "After" {
		t.Fatalf("continue-on-error: status %d, parts %v, rows %v", resp.StatusCode, got, rows)
	}
}

func TestBulkActionsAreOneTransaction(t *testing.T) {
	a := newAPI(t)
	bad := `{"Targets":[
		{"@odata.type":"Microsoft.Dynamics.CRM.account","name":"Kept?","@odata.id":"accounts(accountnumber='K1')"},
		{"@odata.type":"Microsoft.Dynamics.CRM.account","name":"` + strings.Repeat("x", 161) + `","@odata.id":"accounts(accountnumber='K2')"}]}`
	resp, out := a.do("POST", "accounts/Microsoft.Dynamics.CRM.UpsertMultiple", bad)
	if rows, _ := a.emu.Rows("accounts"); resp.StatusCode != 400 || len(rows) != 0 || out["error"].(map[string]any)["code"] != "0x80044331" {
		t.Fatalf("a bad target: %d %v, %d rows kept", resp.StatusCode, out, len(rows))
	}
	good := strings.Replace(bad, strings.Repeat("x", 161), "Second", 1)
	if resp, out := a.do("POST", "accounts/Microsoft.Dynamics.CRM.UpsertMultiple", good); resp.StatusCode != 204 {
		t.Fatalf("UpsertMultiple: %d %v", resp.StatusCode, out)
	}
	a.do("POST", "accounts/Microsoft.Dynamics.CRM.UpsertMultiple", good) // again: updates by alternate key
	if rows, _ := a.emu.Rows("accounts"); len(rows) != 2 || rows[0]["accountnumber"] != "K1" {
		t.Fatalf("rows after two upserts by alternate key: %v", rows)
	}
	resp, out = a.do("POST", "accounts/Microsoft.Dynamics.CRM.CreateMultiple", `{"Targets":[{"name":"untyped"}]}`)
	if resp.StatusCode != 400 || !strings.Contains(out["error"].(map[string]any)["message"].(string), "without a type name") {
		t.Fatalf("a target without @odata.type: %d %v", resp.StatusCode, out)
	}
	resp, out = a.do("POST", "accounts/Microsoft.Dynamics.CRM.CreateMultiple", `{"Targets":[{"@odata.type":"Microsoft.Dynamics.CRM.account","name":"C"}]}`)
	if ids, _ := out["Ids"].([]any); resp.StatusCode != 200 || len(ids) != 1 {
		t.Fatalf("CreateMultiple: %d %v", resp.StatusCode, out)
	}
}

func TestConditionalOperationsAndRepresentations(t *testing.T) {
	a := newAPI(t)
	id := "11111111-2222-3333-4444-555555555555"
	resp, out := a.do("PATCH", "accounts("+id+")", `{"name":"New"}`, "Prefer", "return=representation")
	if resp.StatusCode != 201 || out["name"] != "New" {
		t.Fatalf("upsert that creates: %d %v", resp.StatusCode, out)
	}
	etag := out["@odata.etag"].(string)
	resp, out = a.do("PATCH", "accounts("+id+")", `{"name":"Updated"}`, "Prefer", "return=representation")
	if resp.StatusCode != 200 || out["@odata.etag"] == etag {
		t.Fatalf("upsert that updates: %d %v (etag must move on)", resp.StatusCode, out)
	}
	if resp, out := a.do("PATCH", "accounts("+id+")", `{"name":"x"}`, "If-None-Match", "*"); resp.StatusCode != 412 || out["error"].(map[string]any)["code"] != "0x80040237" {
		t.Fatalf("If-None-Match on an existing row: %d %v", resp.StatusCode, out)
	}
	if resp, out := a.do("PATCH", "accounts("+id+")", `{"name":"x"}`, "If-Match", etag); resp.StatusCode != 412 || out["error"].(map[string]any)["code"] != "0x80060882" {
		t.Fatalf("If-Match with a stale ETag: %d %v", resp.StatusCode, out)
	}
	if resp, _ := a.do("DELETE", "accounts("+id+")", "", "If-Match", etag); resp.StatusCode != 412 {
		t.Fatalf("DELETE with a stale ETag: %d", resp.StatusCode)
	}
	if resp, out := a.do("PATCH", "accounts(99999999-2222-3333-4444-555555555555)", `{"name":"x"}`, "If-Match", "*"); resp.StatusCode != 404 {
		t.Fatalf("update of a missing row: %d %v", resp.StatusCode, out)
	}
}

func TestIdentityAnswers(t *testing.T) {
	a := newAPI(t)
	if err := a.emu.SetRoleAssigned(emulator.DefaultApp.UserID, false); err != nil {
		t.Fatal(err)
	}
	resp, out := a.do("GET", "accounts", "")
	if e, _ := out["error"].(map[string]any); resp.StatusCode != 403 || e["code"] != "0x80042f09" ||
		e["message"] != "The user (Id = "+emulator.DefaultApp.UserID.String()+") has not been assigned any roles." {
		t.Fatalf("a user without a role: %d %v", resp.StatusCode, out)
	}
	_ = a.emu.SetRoleAssigned(emulator.DefaultApp.UserID, true)
	_ = a.emu.DisableUser(emulator.DefaultApp.UserID, true)
	if resp, out := a.do("GET", "accounts", ""); resp.StatusCode != 403 || out["error"].(map[string]any)["code"] != "0x80040225" {
		t.Fatalf("a disabled user: %d %v", resp.StatusCode, out)
	}
	// An expired token answers 401 with Dataverse's challenge.
	b := newAPI(t)
	b.emu.SetTokenLifetime(-time.Second)
	req, _ := http.NewRequest("GET", b.srv.URL+"/api/data/v9.2/accounts", nil)
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer authorization_uri=https://login.microsoftonline.com/") {
		t.Fatalf("an expired token: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}

func TestChangeRowBehindTheClientsBack(t *testing.T) {
	a := newAPI(t)
	resp, out := a.do("POST", "accounts", `{"name":"Before"}`, "Prefer", "return=representation")
	if resp.StatusCode != 201 {
		t.Fatal(resp.StatusCode)
	}
	id, etag := out["accountid"].(string), out["@odata.etag"].(string)
	req, _ := http.NewRequest("PATCH", a.srv.URL+"/_emulator/rows/accounts/"+id, strings.NewReader(`{"name":"Changed in Dataverse"}`))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 204 {
		t.Fatalf("admin change: %v %v", err, resp.Status)
	}
	_, out = a.do("GET", "accounts("+id+")", "")
	if out["name"] != "Changed in Dataverse" || out["@odata.etag"] == etag {
		t.Fatalf("row after the change: %v", out)
	}
}
