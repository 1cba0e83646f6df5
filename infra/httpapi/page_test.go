package httpapi

// Tests of what the page shows and where its forms lead, over HTTP on a real PostgreSQL
// database and, for replays and the source view, an embedded NATS server.

import (
	"context"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/consumers/replay"
	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/events"
	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/infra/storage"
)

// startJetStream starts an embedded NATS server with dvsync's streams and returns a client.
func startJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := natsjs.StartEmbedded("127.0.0.1", -1, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close(); srv.Shutdown(); srv.WaitForShutdown() })
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := natsjs.Ensure(context.Background(), js, natsjs.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	return js
}

// withReplay gives a test server a real Replayer on an embedded NATS server.
func withReplay(t *testing.T, ts *testServer) jetstream.JetStream {
	t.Helper()
	js := startJetStream(t)
	ts.srv.Replay = &replay.Replayer{Store: ts.store, JS: js, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	return js
}

// changeEvent is a change event as a publisher sends it.
func changeEvent(t *testing.T, table, key string, version int64, fields map[string]any) []byte {
	t.Helper()
	data, err := events.Encode(domain.ChangeEvent{ID: uuid.NewString(), Type: domain.EventUpserted, Source: "test",
		Table: table, Key: key, Version: version, Fields: fields}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// replayableError stores an open error whose change was read back from the stream, as the
// projector does, so that a retry publishes it.
func replayableError(t *testing.T, ts *testServer, class domain.Class, kind domain.Kind) (int64, string) {
	t.Helper()
	key := fmt.Sprintf("R%d-%s", seeded.Add(1), uuid.NewString()[:8])
	v := int64(1)
	ev := domain.ErrorEvent{ID: uuid.NewString(), OccurredAt: time.Now().UTC(), Failure: domain.Failure{Class: class, Kind: kind, Message: "it failed"},
		Table: "customer", Key: key, EventVersion: &v, EventType: domain.EventUpserted,
		Event: changeEvent(t, "customer", key, 1, map[string]any{"number": key})}
	if err := ts.store.RecordErrorChecked(context.Background(), ev, ""); err != nil {
		t.Fatal(err)
	}
	list, err := ts.store.ListErrors(context.Background(), storage.ErrorFilter{Table: "customer", Key: key})
	if err != nil || len(list) != 1 {
		t.Fatalf("the seeded error: %v %v", list, err)
	}
	return list[0].ID, key
}

// Kinds show in words, times in UTC with the zone, and Kind and Table are choices of the known
// ones: the setup tab offers the setup kinds, and a value a link names stays chosen.
func TestPageShowsKindsInWordsZonedTimesAndChoices(t *testing.T) {
	ts := newTestServer(t)
	at := time.Date(2026, 12, 2, 6, 4, 46, 0, time.FixedZone("CET", 3600))
	seedError(t, ts.store, domain.ErrorEvent{OccurredAt: at})
	cookie := ts.signIn(viewerToken)

	a := ts.do("GET", "/errors?class=coupling&status=", "", cookie)
	if a.status != 200 || !strings.Contains(a.body, `<span class="kind" title="dependency_not_coupled">Dependency not coupled</span>`) {
		t.Fatalf("the kind in words: %d", a.status)
	}
	if !strings.Contains(a.body, "2026-12-02 05:04:46 UTC") {
		t.Errorf("the time with its zone is not shown: %s", grep(a.body, "Seen"))
	}
	kinds, tables := options(t, a.body, "kind"), options(t, a.body, "table")
	if want := append([]string{""}, kindStrings(domain.KindsOf(domain.ClassCoupling))...); !equal(kinds, want) {
		t.Errorf("the coupling tab's kinds: %q, want %q", kinds, want)
	}
	if want := append([]string{""}, domain.KnownTables...); !equal(tables, want) {
		t.Errorf("the tables: %q, want %q", tables, want)
	}

	a = ts.do("GET", "/errors?class=setup&kind=missing_privilege&table=vendor", "", cookie)
	if kinds := options(t, a.body, "kind"); !equal(kinds, append([]string{""}, kindStrings(domain.KindsOf(domain.ClassSetup))...)) {
		t.Errorf("the setup tab's kinds: %q", kinds)
	}
	if !strings.Contains(a.body, `<option value="missing_privilege" selected>Missing privilege</option>`) ||
		!strings.Contains(a.body, `<option value="vendor" selected>vendor</option>`) {
		t.Error("the kind and table in force are not chosen")
	}
	// A kind this version does not list (a newer one's, or a link's) is offered, and chosen.
	a = ts.do("GET", "/errors?class=setup&kind=from_the_future", "", cookie)
	if !strings.Contains(a.body, `<option value="from_the_future" selected>From the future</option>`) {
		t.Errorf("an unknown kind in force: %s", grep(a.body, "from_the_future"))
	}
}

// A record that never synced shows its version as a dash; one synced at version 0 shows 0.
func TestCouplingsShowADashForAVersionNeverSynced(t *testing.T) {
	ts := newTestServer(t)
	never, zero := "N"+uuid.NewString()[:8], "Z"+uuid.NewString()[:8]
	for _, c := range []domain.Coupling{
		{Table: "customer", Key: never, Entity: "account", Status: domain.CouplingFailed, LastErrorKind: domain.KindDependencyNotCoupled, Failures: 1},
		{Table: "customer", Key: zero, Entity: "account", RowID: uuid.New(), Status: domain.CouplingSynced, LastSyncedAt: time.Now()},
	} {
		err := ts.store.UpdateCoupling(context.Background(), c.Table, c.Key, func(context.Context, domain.Coupling, domain.RecordLock) (domain.Coupling, error) {
			return c, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	cookie := ts.signIn(viewerToken)
	row := func(key string) string {
		a := ts.do("GET", "/couplings?q="+key, "", cookie)
		m := regexp.MustCompile(`(?s)<tr>\s*<td>customer/` + key + `</td>.*?</tr>`).FindString(a.body)
		if a.status != 200 || m == "" {
			t.Fatalf("no row of %s: %d", key, a.status)
		}
		return m
	}
	if r := row(never); !strings.Contains(r, `<td class="version">—</td>`) || !strings.Contains(r, "Dependency not coupled") {
		t.Errorf("a record never synced: %s", r)
	}
	if r := row(zero); !strings.Contains(r, `<td class="version">0</td>`) || !strings.Contains(r, " UTC") {
		t.Errorf("a record synced at version 0: %s", r)
	}
}

// A form returns to the page it was posted from: a Retry on the setup tab to the setup tab,
// after a confirmation step too, a Retry on an error's page to that page, its Delete to its list.
// A return to anywhere else goes to the list.
func TestFormsReturnToThePageTheyWerePostedFrom(t *testing.T) {
	ts := newTestServer(t)
	withReplay(t, ts)
	id, key := replayableError(t, ts, domain.ClassSetup, domain.KindMissingPrivilege)
	cookie := ts.signIn(operatorToken)
	list := "/errors?class=setup&q=" + key + "&status=open"
	page := ts.do("GET", list, "", cookie)
	ret := regexp.MustCompile(`name="return" value="([^"]+)"`).FindStringSubmatch(page.body)
	if ret == nil || html.UnescapeString(ret[1]) != "/errors?class=setup&q="+key+"&status=open" {
		t.Fatalf("the list's forms return to %q", ret)
	}
	csrf := ts.csrf(cookie)
	post := func(path string, form url.Values) string {
		t.Helper()
		form.Set("csrf", csrf)
		a := ts.do("POST", path, form.Encode(), cookie, "Origin: "+ts.url)
		if a.status != http.StatusSeeOther {
			t.Fatalf("POST %s: %d %s", path, a.status, a.body)
		}
		return a.header.Get("Location")
	}
	loc := post(fmt.Sprintf("/errors/%d/replay", id), url.Values{"return": {html.UnescapeString(ret[1])}})
	u, _ := url.Parse(loc)
	if u.Path != "/errors" || u.Query().Get("class") != "setup" || u.Query().Get("q") != key || u.Query().Get("msg") != "published" {
		t.Fatalf("a Retry on the setup tab returns to %s", loc)
	}
	if a := ts.do("GET", loc, "", cookie); !strings.Contains(a.body, `aria-current="page">Setup errors`) || !strings.Contains(a.body, "published") {
		t.Fatalf("the setup tab after a Retry: %d %s", a.status, grep(a.body, "flash"))
	}

	// Retry all shown asks first; the confirmation keeps where to return.
	confirm := ts.do("POST", "/errors/replay-shown", url.Values{"csrf": {csrf}, "id": {fmt.Sprint(id)}, "return": {list}}.Encode(), cookie, "Origin: "+ts.url)
	if confirm.status != 200 || !strings.Contains(confirm.body, `name="return" value="`+html.EscapeString(list)+`"`) ||
		!strings.Contains(confirm.body, `href="`+html.EscapeString(list)+`"`) {
		t.Fatalf("the confirmation step does not keep the list: %d %s", confirm.status, grep(confirm.body, "return"))
	}
	loc = post("/errors/replay-shown", url.Values{"id": {fmt.Sprint(id)}, "return": {list}, "confirm": {"yes"}})
	if u, _ := url.Parse(loc); u.Query().Get("class") != "setup" || u.Query().Get("msg") != "replayed_shown" {
		t.Fatalf("Retry all shown on the setup tab returns to %s", loc)
	}

	if loc := post(fmt.Sprintf("/errors/%d/replay", id), url.Values{"return": {fmt.Sprintf("/errors/%d", id)}}); !strings.HasPrefix(loc, fmt.Sprintf("/errors/%d?", id)) {
		t.Fatalf("a Retry on the error's page returns to %s", loc)
	}
	for _, evil := range []string{"https://evil.example/errors", "//evil.example/errors", "/login", "/errors/../audit", "/errors/1/delete"} {
		if loc := post(fmt.Sprintf("/errors/%d/replay", id), url.Values{"return": {evil}}); !strings.HasPrefix(loc, "/errors?") {
			t.Errorf("return %q leads to %s", evil, loc)
		}
	}
	// Without a return field, the Referer of this host still says where.
	form := url.Values{"csrf": {csrf}}.Encode()
	a := ts.do("POST", fmt.Sprintf("/errors/%d/replay", id), form, cookie, "Origin: "+ts.url, "Referer: "+ts.url+"/errors?class=setup")
	if u, _ := url.Parse(a.header.Get("Location")); a.status != http.StatusSeeOther || u.Query().Get("class") != "setup" {
		t.Fatalf("a Retry with a Referer only: %d %s", a.status, a.header.Get("Location"))
	}
}

// An error's page has Retry and Delete for operators, behind the same role, CSRF token and
// audit as the list's; a viewer sees neither and may not post them.
func TestErrorPageHasRetryAndDelete(t *testing.T) {
	ts := newTestServer(t)
	withReplay(t, ts)
	id, _ := replayableError(t, ts, domain.ClassCoupling, domain.KindDependencyNotCoupled)
	path := fmt.Sprintf("/errors/%d", id)

	vera := ts.signIn(viewerToken)
	if a := ts.do("GET", path, "", vera); a.status != 200 || strings.Contains(a.body, `class="retry"`) || strings.Contains(a.body, `class="delete`) {
		t.Fatalf("a viewer's view of the error: %d, buttons shown: %v", a.status, strings.Contains(a.body, "retry"))
	}
	form := url.Values{"csrf": {ts.csrf(vera)}, "return": {path}}.Encode()
	for _, action := range []string{"/replay", "/delete"} {
		if a := ts.do("POST", path+action, form, vera, "Origin: "+ts.url); a.status != http.StatusForbidden {
			t.Errorf("a viewer's %s: %d", action, a.status)
		}
	}

	otto := ts.signIn(operatorToken)
	a := ts.do("GET", path, "", otto)
	forms := regexp.MustCompile(`<form class="inline" method="post" action="(/errors/\d+/(?:replay|delete))"><input type="hidden" name="csrf" value="[0-9a-f]+"><input type="hidden" name="return" value="([^"]+)">`).FindAllStringSubmatch(a.body, -1)
	if len(forms) != 2 || forms[0][1] != path+"/replay" || forms[0][2] != path || forms[1][1] != path+"/delete" ||
		html.UnescapeString(forms[1][2]) != "/errors?class=coupling" {
		t.Fatalf("the operator's buttons: %q", forms)
	}
	if a := ts.do("POST", path+"/delete", url.Values{"return": {"/errors?class=coupling"}}.Encode(), otto, "Origin: "+ts.url); a.status != http.StatusForbidden || !exists(t, ts.store, id) {
		t.Fatalf("a Delete without the CSRF token: %d", a.status)
	}
	csrf := ts.csrf(otto)
	a = ts.do("POST", path+"/replay", url.Values{"csrf": {csrf}, "return": {path}}.Encode(), otto, "Origin: "+ts.url)
	if loc := a.header.Get("Location"); a.status != http.StatusSeeOther || loc != fmt.Sprintf("%s?id=%d&msg=published", path, id) {
		t.Fatalf("Retry on the error's page: %d %s", a.status, loc)
	}
	if a := ts.do("GET", fmt.Sprintf("%s?id=%d&msg=published", path, id), "", otto); !strings.Contains(a.body, fmt.Sprintf("Error %d: published", id)) {
		t.Fatalf("the error's page after its Retry: %s", grep(a.body, "flash"))
	}
	a = ts.do("POST", path+"/delete", url.Values{"csrf": {csrf}, "return": {"/errors?class=coupling"}}.Encode(), otto, "Origin: "+ts.url)
	if loc := a.header.Get("Location"); a.status != http.StatusSeeOther || loc != fmt.Sprintf("/errors?class=coupling&id=%d&msg=deleted", id) || exists(t, ts.store, id) {
		t.Fatalf("Delete on the error's page: %d %s", a.status, loc)
	}
	audit, err := ts.store.Audit(context.Background(), 20)
	if err != nil {
		t.Fatal(err)
	}
	did := map[string]bool{}
	for _, e := range audit {
		if e.Actor == "otto" && strings.Contains(e.Target, fmt.Sprint(id)) {
			did[e.Action] = true
		}
	}
	if !did["replay"] || !did["delete"] {
		t.Fatalf("the audit of the error's page's actions: %+v", audit)
	}
}

// options lists the values of a select's options.
func options(t *testing.T, body, name string) []string {
	t.Helper()
	sel := regexp.MustCompile(`(?s)<select name="` + name + `">(.*?)</select>`).FindStringSubmatch(body)
	if sel == nil {
		t.Fatalf("no select %s", name)
	}
	var out []string
	for _, m := range regexp.MustCompile(`<option value="([^"]*)"`).FindAllStringSubmatch(sel[1], -1) {
		out = append(out, m[1])
	}
	return out
}

func kindStrings(kinds []domain.Kind) []string {
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = string(k)
	}
	return out
}

func equal(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }

// grep returns the lines of body that contain s, for failure messages.
func grep(body, s string) string {
	var out []string
	for _, line := range strings.Split(body, "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
