package main

import (
	"context"
	"fmt"
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
		_, _ = h.store.ResumeTable(context.Background(), "currency", "cleanup", 0)
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

	if code := call(t, "POST", base+"/api/v1/tables/currency/resume", testOperatorToken, nil, &res); code != 200 || res["changed"] != true {
		t.Fatalf("resume: %d %v", code, res)
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
