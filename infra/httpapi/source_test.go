package httpapi

import (
	"context"
	"fmt"
	"html"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/events"
	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/infra/telemetry"
)

// The source view is off unless asked for; on, it shows a signed-in viewer the record's newest
// change event from the changes stream, pretty, escaped and redacted, with its stream sequence
// and time; a record without one is a 404 that says how far the search looked. The page's source
// links lead to it, keys with "/", "+" and spaces included.
func TestSourceViewShowsTheNewestChangeOfARecord(t *testing.T) {
	ts := newTestServer(t)
	cookie := ts.signIn(viewerToken)
	if a := ts.do("GET", "/source/customer/C1", "", cookie); a.status != http.StatusNotFound || strings.Contains(a.body, "Source record") {
		t.Fatalf("the source view without Sources: %d", a.status)
	}

	js := startJetStream(t)
	ts = serveSources(t, ts, natsjs.ChangeFinder{JS: js})
	cookie = ts.signIn(viewerToken)

	key := "K/" + uuid.NewString()[:8] + "+1 <b>"
	publish := func(version int64, fields map[string]any) uint64 {
		t.Helper()
		ack, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: events.Subject("customer"),
			Data: changeEvent(t, "customer", key, version, fields), Header: nats.Header{"Authorization": {"Bearer sekrit-header"}}})
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	publish(1, map[string]any{"displayName": "first"})
	newest := publish(2, map[string]any{"displayName": "<script>alert(1)</script>", "Password": "sekrit-pw"})
	// Another record's change comes after: the record's newest is found by a scan.
	if _, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: events.Subject("customer"), Data: changeEvent(t, "customer", "OTHER", 1, map[string]any{})}); err != nil {
		t.Fatal(err)
	}
	id := seedError(t, ts.store, domain.ErrorEvent{Table: "customer", Key: key})

	errorsPage := ts.do("GET", fmt.Sprintf("/errors/%d", id), "", cookie)
	link := regexp.MustCompile(`<a href="([^"]+)" rel="noopener">Open source record</a>`).FindStringSubmatch(errorsPage.body)
	if link == nil {
		t.Fatalf("the error's page has no source link: %s", grep(errorsPage.body, "source"))
	}
	link[1] = html.UnescapeString(link[1])
	if a := ts.do("GET", link[1], ""); a.status != http.StatusSeeOther || a.header.Get("Location") != "/login" {
		t.Fatalf("the source view signed out: %d %s", a.status, a.header.Get("Location"))
	}
	a := ts.do("GET", link[1], "", cookie)
	if a.status != 200 {
		t.Fatalf("the source view of %s: %d %s", link[1], a.status, a.body)
	}
	if !strings.Contains(a.body, fmt.Sprintf(`<td class="sequence">%d</td>`, newest)) || !strings.Contains(a.body, `&#34;version&#34;: 2`) ||
		!strings.Contains(a.body, "&lt;script&gt;alert(1)&lt;/script&gt;") || strings.Contains(a.body, "<script>") || !strings.Contains(a.body, " UTC</time>") ||
		!strings.Contains(a.body, "Source record customer/K/") {
		t.Fatalf("the source view: %s", a.body)
	}
	if strings.Contains(a.body, "sekrit") {
		t.Fatalf("the source view shows a secret: %s", grep(a.body, "sekrit"))
	}

	a = ts.do("GET", "/source/customer/NOPE", "", cookie)
	if a.status != http.StatusNotFound || !strings.Contains(a.body, "No change of this record is in the changes stream") {
		t.Fatalf("a record without a change: %d %s", a.status, grep(a.body, "note"))
	}
	if a := ts.do("GET", "/source/nosuchtable/K1", "", cookie); a.status != http.StatusNotFound {
		t.Fatalf("an unknown table: %d", a.status)
	}
	// Bounded: only the newest message is searched.
	ts = serveSources(t, ts, natsjs.ChangeFinder{JS: js, Limit: 1})
	a = ts.do("GET", link[1], "", ts.signIn(viewerToken))
	if a.status != http.StatusNotFound || !strings.Contains(a.body, "Not found in the newest 1 changes of the stream") {
		t.Fatalf("beyond the bound: %d %s", a.status, grep(a.body, "note"))
	}
}

// serveSources serves ts's store anew with the source view on, and source links pointing at it.
func serveSources(t *testing.T, ts *testServer, f SourceFinder) *testServer {
	t.Helper()
	s := &Server{Metrics: telemetry.New(nil), Ledger: ts.store, Couplings: ts.store, Tokens: ts.srv.Tokens,
		Log: slog.New(slog.NewTextHandler(ts.log, nil)), Sources: f, Links: Links{SourceURL: SourceViewPath}}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &testServer{t: t, url: srv.URL, store: ts.store, log: ts.log, srv: s}
}
