package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/httpapi"
	"github.com/dvsync/dvsync/infra/postgres"
)

// api starts `dvsync serve`'s handler on the harness, with a viewer and an operator token.
func (h *harness) api() string {
	h.t.Helper()
	tokens, err := httpapi.ParseTokens("vera:viewer:viewer-token;otto:operator:operator-token")
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

func (h *harness) openError(table, key string, kind domain.Kind) postgres.StoredError {
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
	var page postgres.ErrorPage
	if code := call(t, "GET", base+"/api/v1/errors?class=coupling&q="+cust, "viewer-token", nil, &page); code != 200 || len(page.Errors) != 1 || page.Errors[0].ID != e.ID {
		t.Fatalf("a viewer's list: %d %+v", code, page)
	}
	if code := call(t, "GET", base+"/api/v1/errors?since=yesterday", "viewer-token", nil, &prob); code != 400 || !strings.Contains(prob["detail"].(string), "RFC 3339") {
		t.Fatalf("a bad time: %d %v", code, prob)
	}
	if code := call(t, "POST", fmt.Sprintf("%s/api/v1/errors/%d/replay", base, e.ID), "viewer-token", nil, &prob); code != 403 {
		t.Fatalf("a viewer's replay: %d", code)
	}
	var detail postgres.ErrorDetail
	if code := call(t, "GET", fmt.Sprintf("%s/api/v1/errors/%d", base, e.ID), "viewer-token", nil, &detail); code != 200 ||
		len(detail.CallStack) == 0 || len(detail.History) != 1 || len(detail.Event) == 0 {
		t.Fatalf("one error in full: %d %+v", code, detail)
	}
	if code := call(t, "GET", base+"/api/v1/errors/999999999", "viewer-token", nil, &prob); code != 404 {
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
		var p postgres.ErrorPage
		call(t, "GET", base+"/api/v1/errors?limit=2&q="+h.prefix+"&cursor="+cursor, "viewer-token", nil, &p)
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
			call(t, "POST", fmt.Sprintf("%s/api/v1/errors/%d/replay", base, e.ID), "operator-token", nil, &r)
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
		var d postgres.ErrorDetail
		call(t, "GET", fmt.Sprintf("%s/api/v1/errors/%d", base, e.ID), "viewer-token", nil, &d)
		published := 0
		for _, r := range d.ReplayLog {
			if r.Outcome == "published" && r.RequestedBy == "otto" {
				published++
			}
		}
		return d.Status == postgres.ErrorResolved && published == 1
	})
	var r map[string]any
	if code := call(t, "POST", fmt.Sprintf("%s/api/v1/errors/%d/replay", base, e.ID), "operator-token", nil, &r); code != 409 || r["outcome"] != "not_replayable" {
		t.Fatalf("replay of a resolved error: %d %v", code, r)
	}

	var del map[string]any
	if code := call(t, "DELETE", base+"/api/v1/errors?all=true", "operator-token", nil, &del); code != 200 || del["deleted"].(float64) < 1 {
		t.Fatalf("delete all: %d %v", code, del)
	}
	var coupling map[string]any
	if code := call(t, "GET", base+"/api/v1/couplings/customer/"+cust, "viewer-token", nil, &coupling); code != 200 || coupling["coupled"] != true {
		t.Fatalf("the coupling after deleting errors: %d %v", code, coupling)
	}
	var audit struct{ Entries []postgres.AuditEntry }
	call(t, "GET", base+"/api/v1/audit", "viewer-token", nil, &audit)
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
		Tables      []postgres.TableStatus
		ConsumerLag *uint64 `json:"consumer_lag"`
	}
	if code := call(t, "GET", base+"/api/v1/status", "viewer-token", nil, &status); code != 200 || len(status.Tables) == 0 || status.ConsumerLag == nil {
		t.Fatalf("status: %d %+v", code, status)
	}
}

func TestCLIAgainstTheAPI(t *testing.T) {
	h := start(t, 1)
	base := h.api()
	cust := h.key("C70000")
	h.publish("customer", cust, 1, map[string]any{"number": cust, "currencyCode": h.key("QQQ")})
	e := h.openError("customer", cust, domain.KindDependencyNotCoupled)
	t.Setenv("DVSYNC_TOKEN", "viewer-token")
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
	t.Setenv("DVSYNC_TOKEN", "operator-token")
	out.Reset()
	if code := run(context.Background(), []string{"errors", "replay", "--server", base, fmt.Sprint(e.ID)}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "published") {
		t.Fatalf("errors replay: exit %d %s %s", code, out.String(), errOut.String())
	}
	if code := run(context.Background(), []string{"errors", "delete", "--server", base, "--all"}, &out, &errOut); code != 2 {
		t.Fatalf("delete --all without --yes: exit %d", code)
	}
}
