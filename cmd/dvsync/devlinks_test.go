package main

import (
	"context"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/httpapi"
	"github.com/dvsync/dvsync/infra/telemetry"
)

func TestDevSourceLinksKeepAConfiguredTemplate(t *testing.T) {
	cfg := Config{}
	devSourceLinks(&cfg)
	if cfg.SourceURL != "/source/{table}/{key}" || (&stack{cfg: cfg}).sourceView() != nil {
		t.Fatalf("dev's source links: %q; without JetStream the view must stay off", cfg.SourceURL)
	}
	cfg.SourceURL = "https://businesscentral.dynamics.com/?company=CRONUS&page=21&filter='No.' IS '{key}'"
	devSourceLinks(&cfg)
	if !strings.HasPrefix(cfg.SourceURL, "https://businesscentral") || (&stack{cfg: cfg, js: nil}).sourceView() != nil {
		t.Fatalf("a configured template was replaced: %q", cfg.SourceURL)
	}
}

// In dev, an error's links open something: its source record opens the record's newest change
// event (the source view, on the stack's own JetStream), its Dataverse row the emulator's page of
// the row. The server is built as serveHTTP builds it, with api.Sources = s.sourceView().
func TestDevLinksOpenTheChangeAndTheRow(t *testing.T) {
	h := start(t, 1)
	cfg := h.cfg
	devSourceLinks(&cfg)
	s := newStack(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := connectAll(context.Background(), s, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.close)
	tokens, err := httpapi.ParseTokens("vera:viewer:" + testViewerToken)
	if err != nil {
		t.Fatal(err)
	}
	api := &httpapi.Server{Metrics: telemetry.New(nil), Ledger: s.store, Couplings: s.store, Tokens: tokens,
		Links: httpapi.Links{DataverseURL: cfg.Dataverse.URL, SourceURL: cfg.SourceURL}, Sources: s.sourceView()}
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()

	// A contact whose account is deleted in Dataverse behind dvsync's back: a coupling error with
	// both a source record and a Dataverse row.
	cust := h.key("C90000")
	h.publish("customer", cust, 1, map[string]any{"number": cust, "displayName": "Linked <Ltd>"})
	c := h.waitCoupled("customer", cust, 1)
	h.publish("customer", cust, 2, map[string]any{"number": cust, "displayName": "Linked <Ltd> 2"})
	h.waitCoupled("customer", cust, 2)
	e := seedLinkedError(t, h, cust, c)

	jar := signIn(t, srv.URL, testViewerToken)
	page := get(t, jar, fmt.Sprintf("%s/errors/%d", srv.URL, e), http.StatusOK)
	links := map[string]string{}
	for _, m := range regexp.MustCompile(`<a href="([^"]+)" rel="noopener">(Open [^<]+)</a>`).FindAllStringSubmatch(page, -1) {
		links[m[2]] = html.UnescapeString(m[1])
	}
	source, row := links["Open source record"], links["Open Dataverse row"]
	if source != "/source/customer/"+url.PathEscape(cust) || !strings.HasPrefix(row, cfg.Dataverse.URL+"/main.aspx?etn=account&id="+c.RowID.String()) {
		t.Fatalf("the error's links: %v", links)
	}
	change := get(t, jar, srv.URL+source, http.StatusOK)
	if !strings.Contains(change, "Linked &lt;Ltd&gt; 2") || !strings.Contains(change, `&#34;version&#34;: 2`) {
		t.Fatalf("the source view shows another change: %s", change)
	}
	if !strings.Contains(change, `rel="noopener">Open Dataverse row “Linked &lt;Ltd&gt; 2”</a>`) {
		t.Errorf("the source view's link to the row does not name it: %s", change)
	}
	dvRow := get(t, http.DefaultClient, row, http.StatusOK)
	if !strings.Contains(dvRow, "Linked &lt;Ltd&gt; 2") || !strings.Contains(dvRow, c.RowID.String()) {
		t.Fatalf("the emulator's row page: %s", dvRow)
	}
}

// seedLinkedError stores a coupling error of a coupled record, with its Dataverse row, and
// returns its id.
func seedLinkedError(t *testing.T, h *harness, key string, c domain.Coupling) int64 {
	t.Helper()
	err := h.store.RecordError(context.Background(), domain.ErrorEvent{ID: key + "-linked", OccurredAt: c.LastSyncedAt,
		Failure: domain.Failure{Class: domain.ClassCoupling, Kind: domain.KindUpdateConflict, Message: "the row changed"},
		Table:   "customer", Key: key, Entity: c.Entity, RowID: c.RowID.String()})
	if err != nil {
		t.Fatal(err)
	}
	e := h.waitError("customer", key, domain.KindUpdateConflict)
	return e.ID
}

// signIn signs in on the page and returns a client that keeps the session's cookie.
func signIn(t *testing.T, base, token string) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Jar: jar}
	req, _ := http.NewRequest("POST", base+"/login", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Request.URL.Path != "/errors" {
		t.Fatalf("sign-in ended at %s", resp.Request.URL)
	}
	return c
}

func get(t *testing.T, c *http.Client, u string, status int) string {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("GET %s: %d, want %d: %s", u, resp.StatusCode, status, body)
	}
	return string(body)
}
