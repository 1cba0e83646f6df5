package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/dvsync/dvsync/consumers/replay"
	"github.com/dvsync/dvsync/domain"
)

// CouplingRunner runs match-based coupling for a whole table (replay.Replayer over the ledger).
type CouplingRunner interface {
	CoupleTable(ctx context.Context, table, actor string, wait time.Duration) (replay.CouplingRun, error)
}

// Coupling runs wait this long for their records' outcomes unless asked otherwise, at most maxRunWait.
const (
	defaultRunWait = 20 * time.Second
	maxRunWait     = 5 * time.Minute
)

// coupleTable is POST /api/v1/couplings/{table}/match?wait=20s: a coupling run of the table.
func (s *Server) coupleTable(w http.ResponseWriter, r *http.Request, p Principal) {
	if err := validText(r.PathValue, "table"); err != nil {
		problem(w, http.StatusBadRequest, "Invalid table", err.Error())
		return
	}
	table := r.PathValue("table")
	if !domain.IsKnownTable(table) {
		problem(w, http.StatusNotFound, "Not found", fmt.Sprintf("table %q is not part of the event contract", table))
		return
	}
	if s.CoupleRun == nil {
		problem(w, http.StatusServiceUnavailable, "Unavailable", "this server does not run coupling runs")
		return
	}
	wait, err := runWait(r.URL.Query().Get("wait"))
	if err != nil {
		problem(w, http.StatusBadRequest, "Invalid wait", err.Error())
		return
	}
	run, err := s.CoupleRun.CoupleTable(r.Context(), table, p.Name, wait)
	if runInProgress(w, table, err) {
		return
	}
	if err != nil {
		s.unavailable(w, err)
		return
	}
	if s.Log != nil {
		s.Log.Info("coupling run", "table", table, "by", p.Name, "records", run.Records, "coupled", run.Coupled,
			"created", run.Created, "failed", run.Failed, "pending", run.Pending)
	}
	writeJSON(w, http.StatusOK, run)
}

// runWait reads a wait: a Go duration ("20s") or seconds, from 0 to maxRunWait.
func runWait(v string) (time.Duration, error) {
	if v == "" {
		return defaultRunWait, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		n, nerr := strconv.Atoi(v)
		if nerr != nil {
			return 0, fmt.Errorf("wait %q is not a duration such as 20s", v)
		}
		d = time.Duration(n) * time.Second
	}
	if d < 0 || d > maxRunWait {
		return 0, fmt.Errorf("wait %q is not between 0 and %s", v, maxRunWait)
	}
	return d, nil
}

// pageRunWait is how long the page's coupling run waits for its records before it shows the counts.
const pageRunWait = 15 * time.Second

// coupleForm is the coupled-records page's "Couple by match" button: a coupling run of the
// table shown, back to the page with its counts.
func (s *Server) coupleForm(w http.ResponseWriter, r *http.Request, d pageData) {
	table := r.PostFormValue("table")
	if !domain.IsKnownTable(table) {
		http.Error(w, "The form names no table of the event contract.", http.StatusBadRequest)
		return
	}
	if s.CoupleRun == nil {
		http.Error(w, "This server does not run coupling runs.", http.StatusServiceUnavailable)
		return
	}
	if rs := s.runStarter(); rs != nil {
		s.startRunForm(w, r, rs, table, d.User) // in the background: the page shows its progress
		return
	}
	run, err := s.CoupleRun.CoupleTable(r.Context(), table, d.User, pageRunWait)
	if err != nil {
		http.Error(w, "The coupling run could not finish; try again.", http.StatusServiceUnavailable)
		return
	}
	q := url.Values{"table": {table}, "msg": {"coupling_run"}}
	for name, n := range map[string]int{"n": run.Records, "coupled": run.Coupled, "created": run.Created, "failed": run.Failed, "pending": run.Pending} {
		q.Set(name, strconv.Itoa(n))
	}
	http.Redirect(w, r, "/couplings?"+q.Encode(), http.StatusSeeOther)
}
