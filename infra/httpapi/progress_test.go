package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dvsync/dvsync/consumers/replay"
	"github.com/dvsync/dvsync/infra/storage"
)

// storeRuns records coupling runs in the real store and runs nothing: enough for the routes.
type storeRuns struct{ store storage.ProgressStore }

func (r storeRuns) CoupleTable(ctx context.Context, table, actor string, _ time.Duration) (replay.CouplingRun, error) {
	rec, err := r.store.StartCouplingRun(ctx, table, actor)
	if err != nil {
		return replay.CouplingRun{}, err
	}
	return replay.CouplingRun{Table: table}, r.store.FinishCouplingRun(ctx, rec.ID, storage.RunCounts{}, "")
}

func (r storeRuns) StartCouplingRun(ctx context.Context, table, actor string, _ time.Duration) (storage.CouplingRunRecord, error) {
	return r.store.StartCouplingRun(ctx, table, actor)
}

func (r storeRuns) CouplingRuns(ctx context.Context, table string, limit int) ([]storage.CouplingRunRecord, error) {
	return r.store.CouplingRuns(ctx, table, limit)
}

// The runs list shows a running run with its progress; a second start while it runs is a 409
// that says why; an unknown table is a 404.
func TestCouplingRunsAreListedAndASecondStartIsRefused(t *testing.T) {
	ts := newTestServer(t)
	ts.srv.CoupleRun = storeRuns{ts.store}
	ctx := context.Background()
	run, err := ts.store.StartCouplingRun(ctx, "item", "otto")
	if err != nil {
		t.Fatal(err)
	}
	total := 40
	t.Cleanup(func() {
		_ = ts.store.FinishCouplingRun(context.Background(), run.ID, storage.RunCounts{Total: &total}, "")
	})
	if err := ts.store.BeatCouplingRun(ctx, run.ID, storage.RunCounts{Total: &total, Done: 10, Coupled: 7, Created: 2, Failed: 1}); err != nil {
		t.Fatal(err)
	}
	viewer, op := "Authorization: Bearer "+viewerToken, "Authorization: Bearer "+operatorToken
	a := ts.do("GET", "/api/v1/couplings/item/runs", "", viewer)
	var res struct {
		Runs []RunView
	}
	if a.status != 200 || json.Unmarshal([]byte(a.body), &res) != nil || len(res.Runs) == 0 {
		t.Fatalf("runs: %d %s", a.status, a.body)
	}
	if r := res.Runs[0]; r.ID != run.ID || r.State != storage.RunRunning || r.Progress.Done != 10 || r.Progress.Total != 40 || r.Coupled != 7 {
		t.Fatalf("the running run = %+v", r)
	}
	if a := ts.do("GET", "/api/v1/couplings/nosuchtable/runs", "", viewer); a.status != 404 {
		t.Fatalf("an unknown table's runs: %d", a.status)
	}
	a = ts.do("POST", "/api/v1/couplings/item/match", "", op)
	if a.status != http.StatusConflict || !strings.Contains(problemDetail(t, a), "coupling run of item is in progress") {
		t.Fatalf("a second start: %d %s", a.status, a.body)
	}
	// The page's button: back to the table's records with the run already running, not a new one.
	cookie := ts.signIn(operatorToken)
	a = ts.do("POST", "/couplings/match", "table=item&csrf="+ts.csrf(cookie), cookie, "Origin: "+ts.url)
	if a.status != http.StatusSeeOther || !strings.Contains(a.header.Get("Location"), "msg=coupling_run_busy") {
		t.Fatalf("the page's second start: %d %v", a.status, a.header)
	}
}

// staticPauses are tables' states as given.
type staticPauses []TableRun

func (staticPauses) Pause(context.Context, string, string) (bool, error)  { return false, nil }
func (staticPauses) Resume(context.Context, string, string) (bool, error) { return false, nil }
func (p staticPauses) States(context.Context) ([]TableRun, error)         { return p, nil }

// The Tables page shows each backlog's bar with its values without any script (a total not
// known yet says "counting…", never max=0), loads the live update from this origin under the
// page's policy, and the feed it polls answers the states as JSON.
func TestProgressBarsShowWithoutScriptAndTheFeedUpdatesThem(t *testing.T) {
	ts := newTestServer(t)
	left := 12.5
	backlog := uint64(90)
	ts.srv.Pauses = staticPauses{
		{Table: "currency", State: StateLoading, Backlog: &backlog, Progress: &Progress{Done: 30, Total: 120, Rate: 2.4, LeftSeconds: &left}},
		{Table: "customer", State: StateCatchingUp, Progress: &Progress{}},
		{Table: "item", State: StateRunning},
	}
	srv := httptest.NewServer(ts.srv.Handler()) // the tables' routes come with Pauses
	t.Cleanup(srv.Close)
	ts.url = srv.URL
	cookie := ts.signIn(viewerToken)
	a := ts.do("GET", "/tables", "", cookie)
	if a.status != 200 {
		t.Fatalf("tables page: %d", a.status)
	}
	for _, want := range []string{
		`<td data-progress="table:currency"><progress max="120" value="30" aria-label="30 of 120 done">25%</progress><span class="progress-text"> 30 / 120, 2.4/s, 12s left</span></td>`,
		`<td data-progress="table:customer">counting…</td>`,
		`<td data-progress="table:item">—</td>`,
		`<p id="progress-live" aria-live="polite"`,
		`<script src="/assets/progress.js" defer></script>`,
	} {
		if !strings.Contains(a.body, want) {
			t.Errorf("the page has no %s:\n%s", want, a.body)
		}
	}
	if strings.Contains(a.body, `max="0"`) || strings.Contains(strings.ToLower(a.body), `http-equiv="refresh"`) {
		t.Errorf("a bar with max=0 or a meta refresh:\n%s", a.body)
	}
	csp := a.header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "script-src") {
		t.Fatalf("the page's policy %q must allow scripts of this origin only", csp)
	}
	js := ts.do("GET", "/assets/progress.js", "")
	if js.status != 200 || !strings.HasPrefix(js.header.Get("Content-Type"), "text/javascript") || !strings.Contains(js.body, "/progress.json") {
		t.Fatalf("the script: %d %q", js.status, js.header.Get("Content-Type"))
	}
	if a := ts.do("GET", "/progress.json", ""); a.status != http.StatusSeeOther {
		t.Fatalf("the feed without a session: %d", a.status)
	}
	feed := ts.do("GET", "/progress.json", "", cookie)
	var res struct {
		States []TableRun `json:"table_states"`
	}
	if feed.status != 200 || json.Unmarshal([]byte(feed.body), &res) != nil || len(res.States) != 3 ||
		res.States[0].Progress == nil || res.States[0].Progress.Done != 30 || feed.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("the feed: %d %s", feed.status, feed.body)
	}
}
