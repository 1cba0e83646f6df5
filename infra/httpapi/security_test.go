package httpapi

// Tests of the API and the page against hostile requests and hostile stored data, on a real
// PostgreSQL database (the errors ledger, the couplings and the signed-out sessions).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/postgres"
	"github.com/dvsync/dvsync/infra/postgres/pgtest"
	"github.com/dvsync/dvsync/infra/redact"
	"github.com/dvsync/dvsync/infra/storage"
	"github.com/dvsync/dvsync/infra/telemetry"
)

var testDatabaseURL string

func TestMain(m *testing.M) { pgtest.Main(m, "httpapi", &testDatabaseURL) }

const (
	viewerToken   = "viewer-token-0123456789abcdef"
	operatorToken = "operator-token-0123456789abcdef"
	testTokens    = "vera:viewer:" + viewerToken + ";otto:operator:" + operatorToken
)

// syncBuffer is a log destination the server's goroutines may write while a test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testServer is one serve replica on the package's database.
type testServer struct {
	t     *testing.T
	url   string
	store *postgres.Store
	log   *syncBuffer
	srv   *Server
}

func openStore(t *testing.T) *postgres.Store {
	t.Helper()
	store, err := postgres.Open(context.Background(), testDatabaseURL, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	return store
}

// serveReplica starts a replica with the tokens and the session key given.
func serveReplica(t *testing.T, store *postgres.Store, tokens string, key []byte) *testServer {
	t.Helper()
	tok, err := ParseTokens(tokens)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	s := &Server{Metrics: telemetry.New(nil), Ledger: store, Couplings: store, Tokens: tok, SessionKey: key,
		Log: slog.New(slog.NewTextHandler(logs, nil))}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &testServer{t: t, url: srv.URL, store: store, log: logs, srv: s}
}

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	return serveReplica(t, openStore(t), testTokens, nil)
}

// noRedirects is a client that shows redirects instead of following them.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout: 30 * time.Second}

type answer struct {
	status int
	header http.Header
	body   string
}

// do sends one request; header lines are "Name: value".
func (ts *testServer) do(method, path, body string, headers ...string) answer {
	ts.t.Helper()
	req, err := http.NewRequest(method, ts.url+path, strings.NewReader(body))
	if err != nil {
		ts.t.Fatal(err)
	}
	if strings.HasPrefix(body, "{") {
		req.Header.Set("Content-Type", "application/json")
	} else if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ": ")
		req.Header.Set(name, value)
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(data)}
}

// signIn signs in on the page as a browser does (Origin: the page's own) and returns the cookie.
func (ts *testServer) signIn(token string) string {
	ts.t.Helper()
	a := ts.do("POST", "/login", url.Values{"token": {token}}.Encode(), "Origin: "+ts.url)
	if a.status != http.StatusSeeOther {
		ts.t.Fatalf("sign-in answered %d: %s", a.status, a.body)
	}
	for _, c := range (&http.Response{Header: a.header}).Cookies() {
		if c.Name == sessionCookie && c.Value != "" {
			return "Cookie: " + c.Name + "=" + c.Value
		}
	}
	ts.t.Fatal("sign-in set no session cookie")
	return ""
}

var csrfField = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// csrf reads the CSRF token of a signed-in page.
func (ts *testServer) csrf(cookie string) string {
	ts.t.Helper()
	a := ts.do("GET", "/errors", "", cookie)
	m := csrfField.FindStringSubmatch(a.body)
	if a.status != 200 || m == nil {
		ts.t.Fatalf("no CSRF token on the page: %d", a.status)
	}
	return m[1]
}

var seeded atomic.Int64

// seedError stores an open coupling error as the projector would, and returns its id.
func seedError(t *testing.T, store *postgres.Store, ev domain.ErrorEvent) int64 {
	t.Helper()
	ev.ID = uuid.NewString()
	if ev.OccurredAt.IsZero() {
		ev.OccurredAt = time.Now().UTC()
	}
	if ev.Class == "" {
		ev.Class, ev.Kind = domain.ClassCoupling, domain.KindDependencyNotCoupled
	}
	if ev.Table == "" {
		ev.Table = "customer"
	}
	if ev.Key == "" {
		ev.Key = fmt.Sprintf("K%d-%s", seeded.Add(1), ev.ID[:8])
	}
	if ev.Message == "" {
		ev.Message = "the currency must be coupled to a record in Dataverse first"
	}
	if err := store.RecordError(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	list, err := store.ListErrors(context.Background(), storage.ErrorFilter{Table: ev.Table, Key: ev.Key})
	if err != nil || len(list) != 1 {
		t.Fatalf("the seeded error: %v %v", list, err)
	}
	return list[0].ID
}

func exists(t *testing.T, store *postgres.Store, id int64) bool {
	t.Helper()
	_, err := store.GetError(context.Background(), id)
	if err != nil && err != storage.ErrNotFound {
		t.Fatal(err)
	}
	return err == nil
}

// A number of days whose duration overflows must not delete every error.
func TestDeleteOlderThanDaysIsBounded(t *testing.T) {
	ts := newTestServer(t)
	id := seedError(t, ts.store, domain.ErrorEvent{})
	for _, days := range []string{"200000", "36501", "0", "-1", "7.5", ""} {
		a := ts.do("DELETE", "/api/v1/errors?older_than_days="+days, "", "Authorization: Bearer "+operatorToken)
		if a.status != 400 || !strings.Contains(a.body, "1 to 36500") {
			t.Errorf("older_than_days=%s: %d %s", days, a.status, a.body)
		}
	}
	if !exists(t, ts.store, id) {
		t.Fatal("a refused deletion deleted a fresh error")
	}
	a := ts.do("DELETE", "/api/v1/errors?older_than_days=36500", "", "Authorization: Bearer "+operatorToken)
	if a.status != 200 || !exists(t, ts.store, id) {
		t.Fatalf("older_than_days=36500: %d %s; the fresh error kept: %v", a.status, a.body, exists(t, ts.store, id))
	}
	// The page's form, confirmed, is bounded the same way.
	cookie := ts.signIn(operatorToken)
	form := url.Values{"csrf": {ts.csrf(cookie)}, "days": {"200000"}, "confirm": {"yes"}}.Encode()
	if a := ts.do("POST", "/errors/delete-old", form, cookie, "Origin: "+ts.url); a.status != 400 || !exists(t, ts.store, id) {
		t.Fatalf("the page's delete-old with 200000 days: %d %s", a.status, a.body)
	}
}

// Signing out ends the session on every replica that shares the database; a session whose
// token was removed from a replica's configuration is refused there.
func TestSignOutEndsTheSessionOnEveryReplica(t *testing.T) {
	store := openStore(t)
	key := bytes.Repeat([]byte{7}, 32)
	a := serveReplica(t, store, testTokens, key)
	// Replica b no longer has vera's token; in replica c vera became an operator.
	b := serveReplica(t, store, "otto:operator:"+operatorToken, key)
	c := serveReplica(t, store, "vera:operator:"+viewerToken+";otto:operator:"+operatorToken, key)

	otto := a.signIn(operatorToken)
	if r := b.do("GET", "/errors", "", otto); r.status != 200 {
		t.Fatalf("a session of replica a on replica b: %d", r.status)
	}
	if r := a.do("POST", "/logout", url.Values{"csrf": {a.csrf(otto)}}.Encode(), otto, "Origin: "+a.url); r.status != http.StatusSeeOther {
		t.Fatalf("sign-out: %d %s", r.status, r.body)
	}
	for name, replica := range map[string]*testServer{"a": a, "b": b} {
		if r := replica.do("GET", "/errors", "", otto); r.status != http.StatusSeeOther || r.header.Get("Location") != "/login" {
			t.Errorf("the signed-out cookie on replica %s: %d", name, r.status)
		}
	}

	vera := a.signIn(viewerToken)
	if r := a.do("GET", "/errors", "", vera); r.status != 200 || !strings.Contains(r.body, "vera (viewer)") {
		t.Fatalf("vera on replica a: %d", r.status)
	}
	if r := b.do("GET", "/errors", "", vera); r.status != http.StatusSeeOther {
		t.Errorf("a session of a removed token: %d", r.status)
	}
	if r := c.do("GET", "/errors", "", vera); r.status != 200 || !strings.Contains(r.body, "vera (operator)") {
		t.Errorf("the session follows the token's role now: %d", r.status)
	}
}

// Posts that another site makes a browser send are refused, the login form included.
func TestCrossSitePostsAreRefused(t *testing.T) {
	ts := newTestServer(t)
	login := url.Values{"token": {operatorToken}}.Encode()
	for _, h := range []string{"Origin: https://evil.example", "Sec-Fetch-Site: cross-site", "Sec-Fetch-Site: same-site", "Origin: null"} {
		a := ts.do("POST", "/login", login, h)
		if a.status != 403 || a.header.Get("Set-Cookie") != "" {
			t.Errorf("login with %s: %d, cookie %q", h, a.status, a.header.Get("Set-Cookie"))
		}
	}
	if a := ts.do("POST", "/login", login, "Sec-Fetch-Site: same-origin", "Origin: "+ts.url); a.status != http.StatusSeeOther {
		t.Fatalf("a same-origin login: %d", a.status)
	}
	id := seedError(t, ts.store, domain.ErrorEvent{})
	cookie := ts.signIn(operatorToken)
	form := url.Values{"csrf": {ts.csrf(cookie)}, "confirm": {"yes"}}.Encode()
	if a := ts.do("POST", "/errors/delete-all", form, cookie, "Origin: https://evil.example"); a.status != 403 || !exists(t, ts.store, id) {
		t.Fatalf("a cross-site delete-all with a valid CSRF token: %d", a.status)
	}
	if a := ts.do("DELETE", fmt.Sprintf("/api/v1/errors/%d", id), "", "Authorization: Bearer "+operatorToken, "Sec-Fetch-Site: cross-site"); a.status != 403 || !exists(t, ts.store, id) {
		t.Fatalf("a cross-site API delete: %d", a.status)
	}
	// The CLI sends neither header.
	if a := ts.do("DELETE", fmt.Sprintf("/api/v1/errors/%d", id), "", "Authorization: Bearer "+operatorToken); a.status != 200 || exists(t, ts.store, id) {
		t.Fatalf("the CLI's delete: %d", a.status)
	}
}

// What the API and the page show of a stored change is redacted for every role; the ledger
// keeps the bytes, for replay.
func TestShownErrorsAreRedacted(t *testing.T) {
	ts := newTestServer(t)
	event := `{"specversion":"1.0","id":"e1","type":"upserted","source":"bc","data":{"table":"customer","key":"C1","version":1,` +
		`"fields":{"displayName":"Visible Name","Password":"sekrit-pw","nested":{"deeper":{"ApiKey":"sekrit-key","api_key":["sekrit-list"]}},` +
		`"contact":{"credential":{"user":"u","pass":"sekrit-cred"}},"note":"Bearer sekrit-in-value-123","count":3}}}`
	basic := "Basic dXNlcjpzZWtyaXQtYmFzaWM=" // user:sekrit-basic
	id := seedError(t, ts.store, domain.ErrorEvent{
		Failure: domain.Failure{Class: domain.ClassCoupling, Kind: domain.KindInvalidData,
			Message: "Dataverse said: Authorization: Bearer sekrit-msg-abcdef; Basic validation failed",
			Details: map[string]string{"token": "sekrit-detail", "reason": "api_key=sekrit-reason"}},
		Event: []byte(event),
		EventHeaders: map[string][]string{"Authentication": {"Bearer sekrit-h1"}, "X-Auth": {"Bearer sekrit-h2"},
			"X-Forwarded-Authorization": {basic}, "X-Login": {basic}, "Traceparent": {"00-abc-def-01"}},
		CallStack: []domain.Stage{{Name: "dataverse", Detail: "400", Request: "PATCH /api/data/v9.2/accounts(1)\n{\"new_password\":\"sekrit-req\",\"name\":\"ok\"}",
			Response: `{"error":{"message":"jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sekrit-jwt-sig"}}`}},
	})
	check := func(who, shown string) {
		t.Helper()
		if strings.Contains(shown, "sekrit") {
			i := strings.Index(shown, "sekrit")
			t.Errorf("%s shows a secret: …%s…", who, shown[max(0, i-80):min(len(shown), i+40)])
		}
	}
	for _, token := range []string{viewerToken, operatorToken} {
		a := ts.do("GET", fmt.Sprintf("/api/v1/errors/%d", id), "", "Authorization: Bearer "+token)
		var d storage.ErrorDetail
		if err := json.Unmarshal([]byte(a.body), &d); err != nil || a.status != 200 {
			t.Fatalf("the error: %d %v", a.status, err)
		}
		headers, _ := json.Marshal(d.EventHeaders)
		check("the API's event", string(d.Event))
		check("the API's headers", string(headers))
		check("the API's error", a.body)
		var ev map[string]any
		if err := json.Unmarshal(d.Event, &ev); err != nil {
			t.Fatalf("the redacted event is not JSON: %v: %s", err, d.Event)
		}
		fields := ev["data"].(map[string]any)["fields"].(map[string]any)
		if fields["displayName"] != "Visible Name" || fields["count"] != 3.0 || fields["Password"] != redact.Redacted ||
			d.EventHeaders["Traceparent"][0] != "00-abc-def-01" || !strings.Contains(d.Message, "Basic validation failed") {
			t.Errorf("the redaction took too much or too little: %s %v %q", d.Event, d.EventHeaders, d.Message)
		}
		var page storage.ErrorPage
		a = ts.do("GET", "/api/v1/errors?key="+url.QueryEscape(d.Key), "", "Authorization: Bearer "+token)
		if err := json.Unmarshal([]byte(a.body), &page); err != nil || len(page.Errors) != 1 {
			t.Fatalf("the list: %d %v", a.status, err)
		}
		check("the API's list", string(page.Errors[0].Event)+a.body)
		cookie := ts.signIn(token)
		for _, path := range []string{fmt.Sprintf("/errors/%d", id), "/errors?status=&key=" + url.QueryEscape(d.Key)} {
			p := ts.do("GET", path, "", cookie)
			if p.status != 200 || !strings.Contains(p.body, d.Key) {
				t.Fatalf("%s: %d", path, p.status)
			}
			check("the page "+path, p.body)
		}
	}
	stored, err := ts.store.GetError(context.Background(), id)
	if err != nil || string(stored.Event) != event || stored.EventHeaders["X-Auth"][0] != "Bearer sekrit-h2" {
		t.Fatalf("the stored change was changed: %v %s %v", err, stored.Event, stored.EventHeaders)
	}
}

// /healthz says which check failed and no more: not the database user, host or port.
func TestHealthNamesNoDatabaseDetails(t *testing.T) {
	u, _ := url.Parse(testDatabaseURL)
	u.Path = "/dvsync_no_such_database"
	pool, err := pgxpool.New(context.Background(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	logs := &syncBuffer{}
	s := &Server{Metrics: telemetry.New(nil), Checks: map[string]Check{"postgres": pool.Ping}, Log: slog.New(slog.NewTextHandler(logs, nil))}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var h struct {
		Status string
		Checks map[string]string
	}
	if err := json.Unmarshal(body, &h); err != nil || resp.StatusCode != 503 || h.Checks["postgres"] != "unavailable" {
		t.Fatalf("healthz: %d %s", resp.StatusCode, body)
	}
	for _, leak := range []string{"user=", u.Hostname(), u.Port(), "no_such_database"} {
		if strings.Contains(string(body), leak) {
			t.Errorf("healthz names %q: %s", leak, body)
		}
	}
	if !strings.Contains(logs.String(), "health check failed") || !strings.Contains(logs.String(), "no_such_database") {
		t.Errorf("the log does not say why: %s", logs.String())
	}
}

// Every body the server reads is bounded: a huge login form is refused, not read.
func TestRequestBodiesAreBounded(t *testing.T) {
	ts := newTestServer(t)
	huge := "token=" + strings.Repeat("a", 2<<20)
	if a := ts.do("POST", "/login", huge); a.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("a 2 MiB login form: %d", a.status)
	}
	big := `{"table":"` + strings.Repeat("a", 2<<20) + `"}`
	if a := ts.do("POST", "/api/v1/errors/replay", big, "Authorization: Bearer "+operatorToken); a.status != 400 {
		t.Fatalf("a 2 MiB replay filter: %d", a.status)
	}
}

// Failed sign-ins are logged (address and path, no token) and limited per address.
func TestFailedSignInsAreLimitedAndLogged(t *testing.T) {
	ts := newTestServer(t)
	for i := 0; i < maxFailedSignIns; i++ {
		path := "/api/v1/errors"
		if i%2 == 1 {
			if a := ts.do("POST", "/login", url.Values{"token": {"guess-" + strconv.Itoa(i)}}.Encode()); a.status != 401 {
				t.Fatalf("wrong page token %d: %d", i, a.status)
			}
			continue
		}
		if a := ts.do("GET", path, "", "Authorization: Bearer guess-"+strconv.Itoa(i)); a.status != 401 {
			t.Fatalf("wrong API token %d: %d", i, a.status)
		}
	}
	for _, a := range []answer{
		ts.do("GET", "/api/v1/errors", "", "Authorization: Bearer guess-more"),
		ts.do("POST", "/login", url.Values{"token": {"guess-more"}}.Encode()),
	} {
		wait, err := strconv.Atoi(a.header.Get("Retry-After"))
		if a.status != 429 || err != nil || wait < 1 || wait > 60 || !strings.Contains(a.body, "not valid") {
			t.Fatalf("a wrong token after %d failures: %d, Retry-After %q: %s", maxFailedSignIns, a.status, a.header.Get("Retry-After"), a.body)
		}
	}
	// Failures beyond the limit are answered without a log line each: guesses cannot flood the log.
	logs := ts.log.String()
	if n := strings.Count(logs, "sign-in refused"); n != maxFailedSignIns || !strings.Contains(logs, "remote=127.0.0.1:") ||
		!strings.Contains(logs, "path=/login") || !strings.Contains(logs, "path=/api/v1/errors") {
		t.Fatalf("%d sign-ins logged:\n%s", n, logs)
	}
	if strings.Contains(logs, "guess-") || strings.Contains(logs, viewerToken) {
		t.Fatalf("the log names a token:\n%s", logs)
	}
	// A request without a token is no sign-in: it is not counted, and says 401 as before.
	if a := ts.do("GET", "/api/v1/errors", ""); a.status != 401 {
		t.Fatalf("no token: %d", a.status)
	}
}

// The limit counts failures by address, and many clients may share one (a reverse proxy, or the
// shared count beyond the limiter's memory): a valid token always passes, on the API and the
// page, however many failures its address has sent.
func TestValidTokenPassesALimitedAddress(t *testing.T) {
	signsIn := func(t *testing.T, ts *testServer) {
		t.Helper()
		if a := ts.do("GET", "/api/v1/errors", "", "Authorization: Bearer "+viewerToken); a.status != 200 {
			t.Errorf("a valid API token from a limited address: %d %s", a.status, a.body)
		}
		if a := ts.do("POST", "/login", url.Values{"token": {operatorToken}}.Encode()); a.status != http.StatusSeeOther ||
			!strings.Contains(a.header.Get("Set-Cookie"), sessionCookie+"=") {
			t.Errorf("a valid page token from a limited address: %d %s", a.status, a.body)
		}
		if a := ts.do("GET", "/api/v1/errors", "", "Authorization: Bearer guess"); a.status != 429 {
			t.Fatalf("a wrong token from the limited address: %d, want 429", a.status)
		}
	}
	store := openStore(t)
	t.Run("address", func(t *testing.T) {
		ts := serveReplica(t, store, testTokens, nil)
		for i := 0; i < maxFailedSignIns; i++ {
			if a := ts.do("GET", "/api/v1/errors", "", "Authorization: Bearer guess-"+strconv.Itoa(i)); a.status != 401 {
				t.Fatalf("wrong token %d: %d", i, a.status)
			}
		}
		signsIn(t, ts)
	})
	t.Run("shared count beyond the limiter's memory", func(t *testing.T) {
		ts := serveReplica(t, store, testTokens, nil)
		l := ts.srv.signIns
		from := func(addr string) *http.Request { return &http.Request{RemoteAddr: addr} }
		for i := 0; len(l.clients) < maxTrackedClients; i++ {
			l.fail(from(fmt.Sprintf("10.%d.%d.%d:1", i>>16&255, i>>8&255, i&255)))
		}
		// An attacker keeps the shared count full from addresses it has not used before.
		for i := 0; i < maxFailedSignIns; i++ {
			l.fail(from(fmt.Sprintf("[2001:db8:%x::1]:1", i)))
		}
		if _, limited := l.fail(from("[2001:db8:ffff::1]:1")); !limited {
			t.Fatal("the shared count is not saturated")
		}
		signsIn(t, ts) // 127.0.0.1 is new to the full limiter: it shares that count.
	})
}

func TestSignInLimiterWindowAndMemory(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := newSignInLimiter()
	l.now = func() time.Time { return now }
	from := func(addr string) *http.Request { return &http.Request{RemoteAddr: addr} }
	for i := 0; i < maxFailedSignIns; i++ {
		if _, limited := l.fail(from("[2001:db8::1]:1000")); limited {
			t.Fatalf("limited after %d failures", i)
		}
	}
	if wait, limited := l.fail(from("[2001:db8::2]:2000")); !limited || wait != signInWindow {
		t.Fatalf("another address of the same /64: limited %v for %s", limited, wait)
	}
	if _, limited := l.fail(from("192.0.2.1:1")); limited {
		t.Fatal("another client is limited")
	}
	now = now.Add(signInWindow)
	if _, limited := l.fail(from("[2001:db8::1]:1000")); limited {
		t.Fatal("still limited after the window")
	}
	// Full of live entries, new addresses share one count instead of growing the map.
	l = newSignInLimiter()
	l.now = func() time.Time { return now }
	for i := 0; len(l.clients) < maxTrackedClients; i++ {
		l.fail(from(fmt.Sprintf("10.%d.%d.%d:1", i>>16&255, i>>8&255, i&255)))
	}
	for i := 0; i < maxFailedSignIns; i++ {
		l.fail(from(fmt.Sprintf("198.51.100.%d:1", i)))
	}
	if _, limited := l.fail(from("203.0.113.9:1")); !limited || len(l.clients) > maxTrackedClients+1 {
		t.Fatalf("beyond the limiter's memory: limited %v, %d entries", limited, len(l.clients))
	}
}

func TestBearerSchemeIsCaseInsensitive(t *testing.T) {
	ts := newTestServer(t)
	for _, scheme := range []string{"Bearer", "bearer", "BEARER"} {
		if a := ts.do("GET", "/api/v1/status", "", "Authorization: "+scheme+" "+viewerToken); a.status != 200 {
			t.Errorf("%s: %d", scheme, a.status)
		}
	}
	if a := ts.do("GET", "/api/v1/status", "", "Authorization: Basic "+viewerToken); a.status != 401 {
		t.Errorf("Basic: %d", a.status)
	}
}

// The banner shows only the page's own messages, whatever a link says.
func TestPageBannerShowsOnlyKnownMessages(t *testing.T) {
	ts := newTestServer(t)
	cookie := ts.signIn(viewerToken)
	for _, q := range []string{"msg=Your+session+expired%2C+call+%2B1-555-0100", "msg=deleted&id=x", "msg=deleted", "msg=__proto__"} {
		a := ts.do("GET", "/errors?"+q, "", cookie)
		if a.status != 200 || strings.Contains(a.body, `class="flash"`) {
			t.Errorf("?%s shows a banner: %d", q, a.status)
		}
	}
	if a := ts.do("GET", "/errors?msg=deleted&id=42", "", cookie); !strings.Contains(a.body, "Error 42 deleted.") {
		t.Errorf("a known message is not shown: %d", a.status)
	}
}

// NUL or invalid UTF-8 in a filter is the client's mistake: 400, naming the field.
func TestFiltersWithNULOrBadUTF8AreBadRequests(t *testing.T) {
	ts := newTestServer(t)
	auth := "Authorization: Bearer " + operatorToken
	for path, field := range map[string]string{
		"/api/v1/errors?q=%00":                "q",
		"/api/v1/errors?table=%ff":            "table",
		"/api/v1/errors?key=a%00b":            "key",
		"/api/v1/couplings/customer/C%00":     "key",
		"/api/v1/couplings/cust%c3%28omer/C1": "table",
	} {
		a := ts.do("GET", path, "", auth)
		var p struct{ Detail string }
		_ = json.Unmarshal([]byte(a.body), &p)
		if a.status != 400 || !strings.HasPrefix(p.Detail, field+" ") {
			t.Errorf("%s: %d %q", path, a.status, p.Detail)
		}
	}
	if a := ts.do("POST", "/api/v1/errors/replay", `{"key":"\u0000"}`, auth); a.status != 400 || !strings.Contains(a.body, "key contains a NUL") {
		t.Errorf("a replay filter with a NUL: %d %s", a.status, a.body)
	}
	cookie := ts.signIn(viewerToken)
	for _, path := range []string{"/errors?q=%00", "/couplings?q=%ff", "/couplings?table=%00"} {
		if a := ts.do("GET", path, "", cookie); a.status != 200 || !strings.Contains(a.body, `class="flash"`) {
			t.Errorf("the page %s: %d", path, a.status)
		}
	}
}
