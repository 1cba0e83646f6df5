package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dvsync/dvsync/infra/httpapi"
)

// A paused table's changes wait in the stream: nothing syncs while it is paused, the status
// shows it paused with its backlog; once resumed it catches up and the newest version wins.
// Both are audited.
func TestPausedTableWaitsAndCatchesUpInOrder(t *testing.T) {
	h := startWith(t, options{workers: 1, tweak: func(c *Config) { c.Worker.PausedDelay = 300 * time.Millisecond }})
	base := h.api()
	t.Cleanup(func() { // the database outlives the test: no other test may find currency paused
		_, _ = h.store.ResumeTable(context.Background(), "currency", "cleanup", 0, 0)
	})
	var res map[string]any
	if code := call(t, "POST", base+"/api/v1/tables/currency/pause", testViewerToken, nil, &res); code != 403 {
		t.Fatalf("a viewer's pause: %d", code)
	}
	if code := call(t, "POST", base+"/api/v1/tables/nosuchtable/pause", testOperatorToken, nil, &res); code != 404 {
		t.Fatalf("pausing an unmapped table: %d %v", code, res)
	}
	if code := call(t, "POST", base+"/api/v1/tables/currency/pause", testOperatorToken, nil, &res); code != 200 || res["changed"] != true || res["state"] != "paused" {
		t.Fatalf("pause: %d %v", code, res)
	}
	// The worker hears of the pause at once (a NATS notice), or at its next read (3 s).
	h.eventually("the worker to see the pause", func() bool { return h.workers[0].pausesView.Load().Paused("currency") })
	cur := h.key("P")
	code := isoCode(cur)
	for v := int64(1); v <= 3; v++ {
		h.publish("currency", cur, v, map[string]any{"code": code, "displayName": fmt.Sprintf("Pause v%d", v), "symbol": "P"})
	}
	held := h.workers[0].metrics.EventsHandled.WithLabelValues("currency", "paused")
	h.eventually("the worker to hold back every change of the paused table", func() bool { return testutil.ToFloat64(held) >= 3 })
	if c := h.coupling("currency", cur); c.Exists {
		t.Fatalf("a paused table's change synced: %+v", c)
	}
	state := func() httpapi.TableRun {
		t.Helper()
		var st struct {
			States []httpapi.TableRun `json:"table_states"`
		}
		if code := call(t, "GET", base+"/api/v1/status", testViewerToken, nil, &st); code != 200 {
			t.Fatalf("status: %d", code)
		}
		for _, s := range st.States {
			if s.Table == "currency" {
				return s
			}
		}
		t.Fatalf("no state for currency in %+v", st.States)
		return httpapi.TableRun{}
	}
	if s := state(); s.State != httpapi.StatePaused || s.Backlog == nil || *s.Backlog < 3 || s.By != "otto" {
		t.Fatalf("status while paused: %+v", s)
	}

	// The CLI shows it paused with its backlog.
	t.Setenv("DVSYNC_TOKEN", testViewerToken)
	var out, errOut strings.Builder
	if rc := run(context.Background(), []string{"status", "--server", base}, &out, &errOut); rc != 0 ||
		!regexp.MustCompile(`(?m)^currency\s+paused\s+[1-9]\d*\s`).MatchString(out.String()) {
		t.Fatalf("dvsync status = %d:\n%s%s", rc, out.String(), errOut.String())
	}
	// The page shows it paused; an operator resumes it with its button.
	if page := get(t, signIn(t, base, testViewerToken), base+"/tables", 200); !strings.Contains(page, `<td>currency</td><td data-state="table:currency">paused</td>`) || strings.Contains(page, "Resume</button>") {
		t.Fatalf("a viewer's tables page:\n%s", page)
	}
	operator := signIn(t, base, testOperatorToken)
	page := get(t, operator, base+"/tables", 200)
	csrf := regexp.MustCompile(`action="/tables/currency/resume"><input type="hidden" name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
	if csrf == nil {
		t.Fatalf("no Resume button for currency:\n%s", page)
	}
	req, _ := http.NewRequest("POST", base+"/tables/currency/resume", strings.NewReader(url.Values{"csrf": {csrf[1]}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	resp, err := operator.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Request.URL.Path != "/tables" {
		t.Fatalf("after Resume: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	c := h.waitCoupled("currency", cur, 3)
	if row := h.row("transactioncurrencies", c.RowID); row["currencyname"] != "Pause v3" {
		t.Fatalf("after the catch-up the row is %v; want the newest version's name", row)
	}
	h.eventually("the table to run again", func() bool { return state().State == httpapi.StateRunning })

	entries, err := h.store.Audit(context.Background(), 50)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range entries {
		if e.Actor == "otto" && strings.HasPrefix(e.Target, "currency") {
			actions = append(actions, e.Action)
		}
	}
	if len(actions) < 2 || actions[0] != "resume" || actions[1] != "pause" {
		t.Fatalf("audit (newest first) = %v; want resume, pause", actions)
	}
}
