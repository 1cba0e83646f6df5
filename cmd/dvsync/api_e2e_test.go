package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/httpapi"
	"github.com/dvsync/dvsync/infra/storage"
)

// The tests' API tokens (at least httpapi.MinTokenLength characters).
const (
	testViewerToken   = "viewer-token-0123456789abcdef"
	testOperatorToken = "operator-token-0123456789abcdef"
)

// api starts `dvsync serve`'s handler on the harness, with a viewer and an operator token.
func (h *harness) api() string {
	h.t.Helper()
	tokens, err := httpapi.ParseTokens("vera:viewer:" + testViewerToken + ";otto:operator:" + testOperatorToken)
	if err != nil {
		h.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = h.projector.serveHTTP(ctx, ln, tokens) }()
	h.t.Cleanup(func() { cancel(); <-done })
	return "http://" + ln.Addr().String()
}

func call(t *testing.T, method, url, token string, body any, out any) int {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, url, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

func (h *harness) openError(table, key string, kind domain.Kind) storage.StoredError {
	h.t.Helper()
	return h.waitError(table, key, kind)
}

func TestErrorsAPIRolesFiltersAndProblems(t *testing.T) {
	h := start(t, 1)
	base := h.api()
	cust := h.key("C50000")
	h.publish("customer", cust, 1, map[string]any{"number": cust, "currencyCode": h.key("XYZ")})
	e := h.openError("customer", cust, domain.KindDependencyNotCoupled)

	var prob map[string]any
	if code := call(t, "GET", base+"/api/v1/errors", "", nil, &prob); code != 401 || prob["status"] != 401.0 {
		t.Fatalf("no token: %d %v", code, prob)
	}
	var page storage.ErrorPage
	if code := call(t, "GET", base+"/api/v1/errors?class=coupling&q="+cust, testViewerToken, nil, &page); code != 200 || len(page.Errors) != 1 || page.Errors[0].ID != e.ID {
		t.Fatalf("a viewer's list: %d %+v", code, page)
	}
	if code := call(t, "GET", base+"/api/v1/errors?since=yesterday", testViewerToken, nil, &prob); code != 400 || !strings.Contains(prob["detail"].(string), "RFC 3339") {
		t.Fatalf("a bad time: %d %v", code, prob)
	}
	if code := call(t, "POST", fmt.Sprintf("%s/api/v1/errors/%d/replay", base, e.ID), testViewerToken, nil, &prob); code != 403 {
		t.Fatalf("a viewer's replay: %d", code)
	}
	var detail storage.ErrorDetail
	if code := call(t, "GET", fmt.Sprintf("%s/api/v1/errors/%d", base, e.ID), testViewerToken, nil, &detail); code != 200 ||
		len(detail.CallStack) == 0 || len(detail.History) != 1 || len(detail.Event) == 0 {
		t.Fatalf("one error in full: %d %+v", code, detail)
	}
	if code := call(t, "GET", base+"/api/v1/errors/999999999", testViewerToken, nil, &prob); code != 404 {
		t.Fatalf("a missing error: %d", code)
	}
	// Cursor paging walks every error exactly once.
	for i := 0; i < 3; i++ {
		k := h.key(fmt.Sprintf("P%d", i))
		h.publish("customer", k, 1, map[string]any{"number": k, "currencyCode": h.key("XYZ")})
		h.openError("customer", k, domain.KindDependencyNotCoupled)
	}
	seen, cursor := map[int64]bool{}, ""
	for pages := 0; pages < 10; pages++ {
		var p storage.ErrorPage
		call(t, "GET", base+"/api/v1/errors?limit=2&q="+h.prefix+"&cursor="+cursor, testViewerToken, nil, &p)
		for _, e := range p.Errors {
			if seen[e.ID] {
				t.Fatalf("error %d on two pages", e.ID)
			}
			seen[e.ID] = true
		}
		if cursor = p.Next; cursor == "" {
			break
		}
	}
	if len(seen) != 4 {
		t.Fatalf("paging saw %d errors, want 4", len(seen))
	}
}

// Replay: once, even when asked twice at once; the error becomes replayed, then resolved when the
// record syncs; deleting errors leaves couplings; every action is audited.
func TestReplayResolvesAndIsAudited(t *testing.T) {
	h := startManualReplay(t)
	base := h.api()
	cust, cur := h.key("C60000"), h.key("JPY")
	h.publish("customer", cust, 1, map[string]any{"number": cust, "displayName": "Replayed", "currencyCode": cur})
	e := h.openError("customer", cust, domain.KindDependencyNotCoupled)
	h.publish("currency", cur, 1, map[string]any{"code": isoCode(cur)})
	h.waitCoupled("currency", cur, 1)

	results := make(chan map[string]any, 2)
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var r map[string]any
			call(t, "POST", fmt.Sprintf("%s/api/v1/errors/%d/replay", base, e.ID), testOperatorToken, nil, &r)
			results <- r
		}()
	}
	wg.Wait()
	close(results)
	outcomes := map[string]int{}
	for r := range results {
		outcomes[r["outcome"].(string)]++
	}
	// One publishes; the other finds it under way, or, when the worker was quick, the record
	// synced (stale) or the error already resolved (not_replayable). Never a second publish.
	if outcomes["published"] != 1 || outcomes["already_replaying"]+outcomes["stale"]+outcomes["not_replayable"] != 1 {
		t.Fatalf("two replays at once: %v", outcomes)
	}
	h.waitCoupled("customer", cust, 1)
	h.eventually("the replayed error to be resolved", func() bool {
		var d storage.ErrorDetail
		call(t, "GET", fmt.Sprintf("%s/api/v1/errors/%d", base, e.ID), testViewerToken, nil, &d)
		published := 0
		for _, r := range d.ReplayLog {
			if r.Outcome == "published" && r.RequestedBy == "otto" {
				published++
			}
		}
		return d.Status == storage.ErrorResolved && published == 1
	})
	var r map[string]any
	if code := call(t, "POST", fmt.Sprintf("%s/api/v1/errors/%d/replay", base, e.ID), testOperatorToken, nil, &r); code != 409 || r["outcome"] != "not_replayable" {
		t.Fatalf("replay of a resolved error: %d %v", code, r)
	}

	var del map[string]any
	if code := call(t, "DELETE", base+"/api/v1/errors?all=true", testOperatorToken, nil, &del); code != 200 || del["deleted"].(float64) < 1 {
		t.Fatalf("delete all: %d %v", code, del)
	}
	var coupling map[string]any
	if code := call(t, "GET", base+"/api/v1/couplings/customer/"+cust, testViewerToken, nil, &coupling); code != 200 || coupling["coupled"] != true {
		t.Fatalf("the coupling after deleting errors: %d %v", code, coupling)
	}
	var audit struct{ Entries []storage.AuditEntry }
	call(t, "GET", base+"/api/v1/audit", testViewerToken, nil, &audit)
	actions := map[string]bool{}
	for _, a := range audit.Entries {
		if a.Actor == "otto" {
			actions[a.Action] = true
		}
	}
	if !actions["replay"] || !actions["delete"] {
		t.Fatalf("audit log: %+v", audit.Entries)
	}
	var status struct {
		Tables      []storage.TableStatus
		ConsumerLag *uint64 `json:"consumer_lag"`
	}
	if code := call(t, "GET", base+"/api/v1/status", testViewerToken, nil, &status); code != 200 || len(status.Tables) == 0 || status.ConsumerLag == nil {
		t.Fatalf("status: %d %+v", code, status)
	}
}

func TestCLIAgainstTheAPI(t *testing.T) {
	h := start(t, 1)
	base := h.api()
	cust := h.key("C70000")
	h.publish("customer", cust, 1, map[string]any{"number": cust, "currencyCode": h.key("QQQ")})
	e := h.openError("customer", cust, domain.KindDependencyNotCoupled)
	t.Setenv("DVSYNC_TOKEN", testViewerToken)
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"errors", "list", "--server", base, "--q", cust}, &out, &errOut); code != 0 ||
		!strings.Contains(out.String(), "dependency_not_coupled") || !strings.Contains(out.String(), cust) {
		t.Fatalf("errors list: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"errors", "show", "--server", base, fmt.Sprint(e.ID)}, &out, &errOut); code != 0 ||
		!strings.Contains(out.String(), "must be coupled") || !strings.Contains(out.String(), "Call stack:") {
		t.Fatalf("errors show: exit %d\n%s", code, out.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"status", "--server", base, "--json"}, &out, &errOut); code != 0 || !json.Valid(out.Bytes()) {
		t.Fatalf("status --json: exit %d\n%s", code, out.String())
	}
	errOut.Reset()
	if code := run(context.Background(), []string{"errors", "replay", "--server", base, fmt.Sprint(e.ID)}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "Forbidden") {
		t.Fatalf("a viewer's replay: exit %d %s", code, errOut.String())
	}
	t.Setenv("DVSYNC_TOKEN", testOperatorToken)
	out.Reset()
	if code := run(context.Background(), []string{"errors", "replay", "--server", base, fmt.Sprint(e.ID)}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "published") {
		t.Fatalf("errors replay: exit %d %s %s", code, out.String(), errOut.String())
	}
	if code := run(context.Background(), []string{"errors", "delete", "--server", base, "--all"}, &out, &errOut); code != 2 {
		t.Fatalf("delete --all without --yes: exit %d", code)
	}
}

// Text from events reaches a terminal only escaped: no escape sequence, carriage return, bell,
// C1 control or bidirectional override of a key or a message is printed raw.
func TestCLIEscapesControlCharactersOfEvents(t *testing.T) {
	h := start(t, 1)
	base := h.api()
	key := h.key("C9\x1b[2J\x1b]0;owned\x07")
	err := h.store.RecordError(context.Background(), domain.ErrorEvent{ID: uuid.NewString(), OccurredAt: time.Now().UTC(),
		Failure: domain.Failure{Class: domain.ClassCoupling, Kind: domain.KindInvalidData,
			Message:    "bad\rREWRITTEN \u009b31m \u202egnp.exe",
			Resolution: "fix\x1b[8m it"},
		Table: "customer", Key: key, CallStack: []domain.Stage{{Name: "dataverse", Detail: "x\x1b[1m", Request: "PATCH /x\n{\"a\":\"\x1b[5m\"}"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("DVSYNC_TOKEN", testViewerToken)
	raw := func(s string) bool { return strings.ContainsAny(s, "\x1b\r\x07\u009b\u202e") || !utf8.ValidString(s) }
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"errors", "list", "--server", base, "--q", h.prefix}, &out, &errOut); code != 0 ||
		raw(out.String()) || !strings.Contains(out.String(), `C9\x1b[2J\x1b]0;owned\a`) || !strings.Contains(out.String(), `bad REWRITTEN \u009b31m \u202egnp.exe`) {
		t.Fatalf("errors list: exit %d\n%q%s", code, out.String(), errOut.String())
	}
	list, err := h.store.ListErrors(context.Background(), storage.ErrorFilter{Table: "customer", Key: key})
	if err != nil || len(list) != 1 {
		t.Fatalf("the seeded error: %v %v", list, err)
	}
	out.Reset()
	if code := run(context.Background(), []string{"errors", "show", "--server", base, fmt.Sprint(list[0].ID)}, &out, &errOut); code != 0 ||
		raw(out.String()) || !strings.Contains(out.String(), `fix\x1b[8m it`) || !strings.Contains(out.String(), `bad\rREWRITTEN`) || !strings.Contains(out.String(), "PATCH /x\n") {
		t.Fatalf("errors show: exit %d\n%q", code, out.String())
	}
}

func TestCLITermSafe(t *testing.T) {
	for in, want := range map[string]string{
		"plain text, ünïcode ✓":          "plain text, ünïcode ✓",
		"\x1b[31mred\x1b[0m":             `\x1b[31mred\x1b[0m`,
		"a\tb\nc\rd\x07\x00\x7f":         `a\tb\nc\rd\a\x00\x7f`,
		"\u0085\u009b\u200b\u2028\u2066": `\u0085\u009b\u200b\u2028\u2066`,
		"bad \xff\xfe utf-8":             `bad \xff\xfe utf-8`,
	} {
		if got := termSafe(in); got != want {
			t.Errorf("termSafe(%q) = %q, want %q", in, got, want)
		}
	}
	if got := termSafeLines("one\ntwo\r\n"); got != "one\ntwo\\r\n" {
		t.Errorf("termSafeLines = %q", got)
	}
}

func TestCLIDeleteOlderThanDaysIsBounded(t *testing.T) {
	t.Setenv("DVSYNC_TOKEN", testOperatorToken)
	for _, days := range []string{"200000", "0", "-3"} {
		var out, errOut bytes.Buffer
		// The server is never asked: nothing listens there.
		if code := run(context.Background(), []string{"errors", "delete", "--server", "http://127.0.0.1:1", "--older-than-days", days}, &out, &errOut); code != 2 ||
			!strings.Contains(errOut.String(), "1 to 36500") {
			t.Errorf("--older-than-days %s: exit %d %s", days, code, errOut.String())
		}
	}
}

// serve refuses to start with a guessable token or a session key it cannot use, and says which
// setting is wrong without quoting the secret.
func TestCLIServeRefusesWeakSecrets(t *testing.T) {
	t.Setenv("NATS_URL", "nats://127.0.0.1:1")
	t.Setenv("DATABASE_URL", testDatabaseURL)
	for _, c := range []struct{ tokens, key, want, secret string }{
		{"alice:operator:a", "", "alice: the token is shorter than 24", ":a"},
		{"alice:operator:hunter2hunter2", "", "alice: the token is shorter than 24", "hunter2"},
		{"vera:viewer:" + testViewerToken, "not-hex-at-all-zz", "DVSYNC_SESSION_KEY is not hex", "not-hex"},
		{"vera:viewer:" + testViewerToken, "abcdef0123", "DVSYNC_SESSION_KEY has 5 bytes", "abcdef0123"},
	} {
		t.Setenv("DVSYNC_API_TOKENS", c.tokens)
		t.Setenv("DVSYNC_SESSION_KEY", c.key)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var out, errOut bytes.Buffer
		code := run(ctx, []string{"serve"}, &out, &errOut)
		cancel()
		if code != 2 || !strings.Contains(errOut.String(), c.want) || strings.Contains(errOut.String(), c.secret) {
			t.Errorf("tokens %q, key %q: exit %d: %s", c.tokens, c.key, code, errOut.String())
		}
	}
}

func TestCLIListensOnLoopbackByDefault(t *testing.T) {
	t.Setenv("DVSYNC_HTTP_LISTEN", "")
	if got := defaultConfig().HTTPListen; got != "127.0.0.1:8080" {
		t.Fatalf("the default listen address is %q", got)
	}
	t.Setenv("DVSYNC_HTTP_LISTEN", ":8080")
	if got := defaultConfig().HTTPListen; got != ":8080" {
		t.Fatalf("DVSYNC_HTTP_LISTEN=:8080 gives %q", got)
	}
}

// The HTTP server cuts off a client that sends its body too slowly or idles on a connection,
// and refuses huge headers.
func TestServeHTTPCutsSlowAndIdleClients(t *testing.T) {
	saved := httpTimeouts
	httpTimeouts.Read, httpTimeouts.Idle = 300*time.Millisecond, 300*time.Millisecond
	t.Cleanup(func() { httpTimeouts = saved })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				http.Error(w, "slow", http.StatusRequestTimeout)
			}
		}))
	}()
	t.Cleanup(func() { cancel(); <-done })

	// closed tells whether the server closes the connection (before the test's own deadline).
	closed := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := io.Copy(io.Discard, c)
		var ne net.Error
		return !(errors.As(err, &ne) && ne.Timeout())
	}
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	slow := dial()
	fmt.Fprint(slow, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly a few bytes")
	if !closed(slow) {
		t.Error("a client sending its body slowly holds the connection")
	}
	idle := dial()
	fmt.Fprint(idle, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(idle)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("a first request: %v %v", resp, err)
	}
	resp.Body.Close()
	if !closed(idle) {
		t.Error("an idle keep-alive connection is held")
	}
	big := dial()
	fmt.Fprintf(big, "GET /x HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 2*maxHeaderBytes))
	if resp, err := http.ReadResponse(bufio.NewReader(big), nil); err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a %d-byte header: %v %v", 2*maxHeaderBytes, resp, err)
	}
}
