package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/emulator"
	"github.com/dvsync/dvsync/infra/httpapi"
	"github.com/dvsync/dvsync/infra/storage"
)

// tableState is one table's state in the API's status.
func tableState(t *testing.T, base, table string) httpapi.TableRun {
	t.Helper()
	var st struct {
		States []httpapi.TableRun `json:"table_states"`
	}
	if code := call(t, "GET", base+"/api/v1/status", testViewerToken, nil, &st); code != 200 {
		t.Fatalf("status: %d", code)
	}
	for _, s := range st.States {
		if s.Table == table {
			return s
		}
	}
	t.Fatalf("no state for %s in %+v", table, st.States)
	return httpapi.TableRun{}
}

// A running table given many changes at once shows them as a backlog with its progress: the
// state (loading, or catching up for a table synced before), done / total, rate and time left,
// in the API, `dvsync status` and on the Tables page, whose bar moves without a reload; then it
// runs again, with every change synced and the period ended.
func TestARunningTablesBacklogShowsItsLoadingProgress(t *testing.T) {
	h := startWith(t, options{workers: 1, tweak: func(c *Config) {
		c.Worker.ProgressEvery, c.Worker.BacklogThreshold = 200*time.Millisecond, 10
	}})
	ctx := context.Background()
	// The database outlives the tests: a period that an earlier test's stream left open ends here.
	if _, err := h.store.EndBacklog(ctx, "currency"); err != nil {
		t.Fatal(err)
	}
	base := h.api()
	// The browser is started and signed in first: its start must not eat the backlog's time.
	bctx := browser(t)
	if err := chromedp.Run(bctx, browserSignIn(base+"/tables", testViewerToken, "main")); err != nil {
		t.Fatal(err)
	}
	// Dataverse answers slowly, so the backlog lasts long enough to watch (400 changes at 2 s a
	// request; at 800 ms and 200 a loaded machine once saw it end before the page showed it); fast again
	// at the end.
	h.emu.SetLatency(emulator.Latency{PerRequest: 2 * time.Second})
	const n = 400
	var keys []string
	for i := range n {
		k := h.key(fmt.Sprintf("L%03d", i))
		keys = append(keys, k)
		h.publish("currency", k, 1, map[string]any{"code": isoCode(k), "displayName": "Load " + k, "symbol": "L"})
	}
	var seen httpapi.TableRun
	h.eventually("the status to show the backlog part done", func() bool {
		s := tableState(t, base, "currency")
		seen = s
		return (s.State == httpapi.StateLoading || s.State == httpapi.StateCatchingUp) && s.Progress != nil &&
			s.Progress.Done > 0 && s.Progress.Done < s.Progress.Total
	})
	if p := seen.Progress; p.Total < n || p.Rate <= 0 || p.LeftSeconds == nil || *p.LeftSeconds <= 0 || seen.Backlog == nil ||
		*seen.Backlog == 0 || p.Done+*seen.Backlog != p.Total {
		t.Fatalf("backlog's progress = %+v (backlog %v); want done + waiting = total >= %d, a rate and a time left", *p, seen.Backlog, n)
	}

	t.Setenv("DVSYNC_TOKEN", testViewerToken)
	var out, errOut strings.Builder
	if rc := run(ctx, []string{"status", "--server", base}, &out, &errOut); rc != 0 ||
		!regexp.MustCompile(`(?m)^currency\s+(loading|catching up)\s+[1-9]\d*\s+\d+/\d+ \(\d+%\), \d+\.\d/s, \S+ left`).MatchString(out.String()) {
		t.Fatalf("dvsync status = %d:\n%s%s", rc, out.String(), errOut.String())
	}

	// The page: the bar is there, and moves on without the page being loaded again.
	bar := `document.querySelector('[data-progress="table:currency"] progress')`
	var first float64
	if err := chromedp.Run(bctx,
		chromedp.Navigate(base+"/tables"),
		chromedp.WaitVisible(`[data-progress="table:currency"] progress`, chromedp.ByQuery),
		chromedp.Evaluate(`window.stayed = true; `+bar+`.value`, &first),
	); err != nil {
		t.Fatal(err)
	}
	var moved, refresh bool
	if err := chromedp.Run(bctx,
		chromedp.Poll(bar+` && `+bar+`.value > `+fmt.Sprint(first)+` && `+bar+`.max >= `+fmt.Sprint(n)+` && window.stayed === true`,
			&moved, chromedp.WithPollingTimeout(30*time.Second)),
		chromedp.Evaluate(`document.querySelector('meta[http-equiv="refresh" i]') !== null`, &refresh),
	); err != nil || !moved || refresh {
		t.Fatalf("the bar did not move on in place (from %v): %v, moved %v, meta refresh %v", first, err, moved, refresh)
	}
	shot(t, bctx, "tables-progress")

	h.emu.SetLatency(emulator.Latency{})
	for _, k := range keys {
		h.waitCoupled("currency", k, 1)
	}
	h.eventually("the table to run again", func() bool { return tableState(t, base, "currency").State == httpapi.StateRunning })
	periods, err := h.store.BacklogPeriods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range periods {
		if p.Table == "currency" {
			t.Fatalf("the period is still open: %+v", p)
		}
	}
	var state, announced string
	if err := chromedp.Run(bctx,
		chromedp.Poll(`document.querySelector('[data-state="table:currency"]').textContent === 'running'`, nil, chromedp.WithPollingTimeout(30*time.Second)),
		chromedp.Text(`[data-state="table:currency"]`, &state, chromedp.ByQuery),
		chromedp.Text(`#progress-live`, &announced, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	if state != "running" || !strings.Contains(announced, "currency is running") {
		t.Fatalf("after the load the page shows %q and announced %q", state, announced)
	}
}

// A coupling run is recorded as it goes: while it runs the runs list shows it running with
// done of total, a second start is refused with 409, `dvsync status` shows it; at the end it is
// finished with its counts.
func TestCouplingRunsShowTheirProgress(t *testing.T) {
	mappings := matchByName(t, "    createNewIfNoMatch: false\n")
	h := startWith(t, options{workers: 1, tweak: func(c *Config) { c.MappingsFile = mappings }})
	base := h.api()
	const k = 8
	for i := range k {
		key := h.key(fmt.Sprintf("R%02d", i))
		name := "Run " + key
		h.publish("customer", key, 1, map[string]any{"number": key, "displayName": name})
		h.waitError("customer", key, domain.KindNoMatch)
		h.existing("accounts", domain.Attributes{"accountnumber": "X" + key, "name": name})
	}
	h.emu.SetLatency(emulator.Latency{PerRequest: 1500 * time.Millisecond})
	started := time.Now().Add(-time.Second)
	type answer struct {
		code int
		body []byte
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest("POST", base+"/api/v1/couplings/customer/match?wait=2m", nil)
		req.Header.Set("Authorization", "Bearer "+testOperatorToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		var raw json.RawMessage
		err = json.NewDecoder(resp.Body).Decode(&raw)
		done <- answer{code: resp.StatusCode, body: raw, err: err}
	}()
	latest := func() httpapi.RunView {
		t.Helper()
		var res struct{ Runs []httpapi.RunView }
		if code := call(t, "GET", base+"/api/v1/couplings/customer/runs", testViewerToken, nil, &res); code != 200 {
			t.Fatalf("runs: %d", code)
		}
		if len(res.Runs) == 0 || res.Runs[0].StartedAt.Before(started) {
			return httpapi.RunView{}
		}
		return res.Runs[0]
	}
	var running httpapi.RunView
	h.eventually("the run to show its total while it runs", func() bool {
		running = latest()
		return running.State == storage.RunRunning && running.Total != nil
	})
	if running.By != "otto" || *running.Total != k || running.Done >= k || running.Progress.Total != k {
		t.Fatalf("the running run = %+v", running)
	}
	// The coupled-records page shows the run with its bar (the script moves it on).
	page := get(t, signIn(t, base, testViewerToken), base+"/couplings?table=customer", 200)
	if !regexp.MustCompile(`<td data-state="run:customer">running</td>\s*<td data-progress="run:customer">(<progress max="`+fmt.Sprint(k)+`" value="\d+"|counting…)`).MatchString(page) ||
		!strings.Contains(page, `<script src="/assets/progress.js" defer></script>`) {
		t.Fatalf("the coupled-records page while the run runs:\n%s", page)
	}
	var problem struct{ Detail string }
	if code := call(t, "POST", base+"/api/v1/couplings/customer/match?wait=1s", testOperatorToken, nil, &problem); code != http.StatusConflict ||
		!strings.Contains(problem.Detail, "in progress") {
		t.Fatalf("a second run while one runs: %d %+v", code, problem)
	}
	t.Setenv("DVSYNC_TOKEN", testViewerToken)
	var out, errOut strings.Builder
	if rc := run(context.Background(), []string{"status", "--server", base}, &out, &errOut); rc != 0 ||
		!regexp.MustCompile(`(?m)^COUPLING RUN\s+STATE`).MatchString(out.String()) ||
		!regexp.MustCompile(`(?m)^customer\s+running\s+\d+/`+fmt.Sprint(k)+` `).MatchString(out.String()) {
		t.Fatalf("dvsync status = %d:\n%s%s", rc, out.String(), errOut.String())
	}

	h.emu.SetLatency(emulator.Latency{})
	var a answer
	select {
	case a = <-done:
	case <-time.After(3 * time.Minute):
		t.Fatal("the coupling run did not answer")
	}
	if a.err != nil || a.code != 200 {
		t.Fatalf("the run: %d %v %s", a.code, a.err, a.body)
	}
	end := latest()
	if end.State != storage.RunFinished || end.Total == nil || *end.Total != k || end.Done != k || end.Coupled != k || end.FinishedAt == nil {
		t.Fatalf("the finished run = %+v", end)
	}
	out.Reset()
	if rc := run(context.Background(), []string{"status", "--server", base}, &out, &errOut); rc != 0 ||
		!regexp.MustCompile(`(?m)^customer\s+finished\s+`+fmt.Sprint(k)+`/`+fmt.Sprint(k)+` \(100%\)\S*\s+`+fmt.Sprint(k)+`\s+0\s+0\s`).MatchString(out.String()) {
		t.Fatalf("dvsync status after the run:\n%s%s", out.String(), errOut.String())
	}
}
