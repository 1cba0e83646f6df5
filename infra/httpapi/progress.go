package httpapi

import (
	"context"
	_ "embed"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// Long work's progress (h-progress): the tables' backlog periods come with their states
// (TablePauses.States); the coupling runs are recorded in the store as they go.

// CouplingRunStarter is a CouplingRunner whose runs can go on after the request (the page's
// button) and be listed; cmd/dvsync's recordedRuns is one.
type CouplingRunStarter interface {
	StartCouplingRun(ctx context.Context, table, actor string, wait time.Duration) (storage.CouplingRunRecord, error)
	CouplingRuns(ctx context.Context, table string, limit int) ([]storage.CouplingRunRecord, error)
}

// StateLoading is a table's first load: nothing of it was synced when its backlog began.
const StateLoading = "loading"

// Counting reports whether the total is not known yet: a bar then shows "counting…", never max=0.
func (p Progress) Counting() bool { return p.Total == 0 }

// RunView is a coupling run as the API and the page show it.
type RunView struct {
	storage.CouplingRunRecord
	// Progress is done of total with the rate; its total is 0 while the run lists its records.
	Progress Progress `json:"progress"`
}

func runView(r storage.CouplingRunRecord) RunView {
	v := RunView{CouplingRunRecord: r, Progress: Progress{Done: uint64(max(r.Done, 0))}}
	if r.Total != nil {
		v.Progress.Total = uint64(max(*r.Total, 0))
		if el := r.HeartbeatAt.Sub(r.StartedAt).Seconds(); el > 0 && r.Done > 0 && r.State == storage.RunRunning {
			v.Progress.Rate = float64(r.Done) / el
			s := float64(v.Progress.Total-min(v.Progress.Done, v.Progress.Total)) / v.Progress.Rate
			v.Progress.LeftSeconds = &s
		}
	}
	return v
}

func runViews(runs []storage.CouplingRunRecord) []RunView {
	out := make([]RunView, 0, len(runs))
	for _, r := range runs {
		out = append(out, runView(r))
	}
	return out
}

// progressRoutes are the coupling runs' list (registered in allRoutes).
var progressRoutes = []route{
	{"GET", "/api/v1/couplings/{table}/runs", RoleViewer, func(s *Server) func(http.ResponseWriter, *http.Request, Principal) { return s.listRuns }},
}

func (s *Server) runStarter() CouplingRunStarter {
	rs, _ := s.CoupleRun.(CouplingRunStarter)
	return rs
}

// listRuns is GET /api/v1/couplings/{table}/runs: the table's coupling runs, newest first.
func (s *Server) listRuns(w http.ResponseWriter, r *http.Request, _ Principal) {
	if err := validText(r.PathValue, "table"); err != nil {
		problem(w, http.StatusBadRequest, "Invalid table", err.Error())
		return
	}
	table := r.PathValue("table")
	if !domain.IsKnownTable(table) {
		problem(w, http.StatusNotFound, "Not found", "table "+table+" is not part of the event contract")
		return
	}
	rs := s.runStarter()
	if rs == nil {
		problem(w, http.StatusServiceUnavailable, "Unavailable", "this server does not record coupling runs")
		return
	}
	runs, err := rs.CouplingRuns(r.Context(), table, 20)
	if err != nil {
		s.unavailable(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"table": table, "runs": runViews(runs)})
}

// runInProgress answers a coupling run refused because another of the table runs: 409.
func runInProgress(w http.ResponseWriter, table string, err error) bool {
	if !errors.Is(err, storage.ErrRunInProgress) {
		return false
	}
	problem(w, http.StatusConflict, "Coupling run in progress",
		"a coupling run of "+table+" is in progress; wait for it to finish (GET /api/v1/couplings/"+table+"/runs shows it) and start another then")
	return true
}

// latestRuns are the newest coupling runs, one per table at most, for the status views.
func (s *Server) latestRuns(ctx context.Context) ([]RunView, error) {
	rs := s.runStarter()
	if rs == nil {
		return nil, nil
	}
	runs, err := rs.CouplingRuns(ctx, "", 50)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []RunView
	for _, r := range runs {
		if !seen[r.Table] {
			seen[r.Table] = true
			out = append(out, runView(r))
		}
	}
	return out, nil
}

// progressJSON is what the pages' script polls: the tables' states and the latest runs.
func (s *Server) progressJSON(w http.ResponseWriter, r *http.Request, _ pageData) {
	out := map[string]any{}
	if s.Pauses != nil {
		states, err := s.Pauses.States(r.Context())
		if err != nil {
			s.unavailable(w, err)
			return
		}
		out["table_states"] = states
	}
	runs, err := s.latestRuns(r.Context())
	if err != nil {
		s.unavailable(w, err)
		return
	}
	out["coupling_runs"] = runs
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, out)
}

//go:embed assets/progress.js
var progressScript []byte

// progressRoutesPage are the page's progress feed and its script, a file of this origin so that
// the pages' policy (default-src 'self') allows it without an inline script.
func (s *Server) progressPageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /progress.json", s.page(RoleViewer, s.progressJSON))
	mux.HandleFunc("GET /assets/progress.js", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(progressScript)
	})
}

// runsOf are the table's newest coupling runs for its page (none when runs are not recorded).
func (s *Server) runsOf(ctx context.Context, table string) []RunView {
	rs := s.runStarter()
	if rs == nil || table == "" {
		return nil
	}
	runs, err := rs.CouplingRuns(ctx, table, 3)
	if err != nil {
		s.logWarn("reading the coupling runs", err)
		return nil
	}
	return runViews(runs)
}

// backgroundRunWait is how long a run started from the page waits for its records' outcomes.
const backgroundRunWait = 5 * time.Minute

// startRunForm starts the page's coupling run in the background and returns to the table's
// coupled records at once, where the run's bar shows how it goes.
func (s *Server) startRunForm(w http.ResponseWriter, r *http.Request, rs CouplingRunStarter, table, actor string) {
	q := "/couplings?table=" + url.QueryEscape(table)
	_, err := rs.StartCouplingRun(r.Context(), table, actor, backgroundRunWait)
	switch {
	case errors.Is(err, storage.ErrRunInProgress):
		http.Redirect(w, r, q+"&msg=coupling_run_busy", http.StatusSeeOther)
	case err != nil:
		s.logWarn("starting a coupling run", err)
		http.Error(w, "The coupling run could not start; try again.", http.StatusServiceUnavailable)
	default:
		http.Redirect(w, r, q+"&msg=coupling_run_started", http.StatusSeeOther)
	}
}
