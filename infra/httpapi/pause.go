package httpapi

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// TablePauses pauses and resumes tables (h-pause): a paused table's changes wait in the stream.
type TablePauses interface {
	// Pause and Resume report whether the state changed; ErrUnknownTable for a table no mapping has.
	Pause(ctx context.Context, table, actor string) (bool, error)
	Resume(ctx context.Context, table, actor string) (bool, error)
	// States is every mapped table's state with its changes waiting, and a backlog period's progress.
	States(ctx context.Context) ([]TableRun, error)
}

// ErrUnknownTable is a table that no mapping has.
var ErrUnknownTable = errors.New("no mapping has this table")

// Table states.
const (
	StateRunning    = "running"
	StatePaused     = "paused"
	StateCatchingUp = "catching_up"
)

// TableRun is where one table stands.
type TableRun struct {
	Table string `json:"table"`
	State string `json:"state"`
	// Since and By: the last pause or resume (absent for a table never paused).
	Since *time.Time `json:"since,omitempty"`
	By    string     `json:"by,omitempty"`
	// Backlog is the table's changes waiting: a paused table's after the workers' ack floor, a
	// running one's after their delivered position, and during a backlog period what is left of it
	// (handed-out changes not acked yet included). Absent when JetStream could not be read.
	Backlog *uint64 `json:"backlog,omitempty"`
	// Progress is a load's or catch-up's (a backlog period) since it began.
	Progress *Progress `json:"progress,omitempty"`
}

// Progress is long work's done / total, rate and time left.
type Progress struct {
	Done  uint64  `json:"done"`
	Total uint64  `json:"total"`
	Rate  float64 `json:"rate_per_second"`
	// LeftSeconds is the time left at the rate so far; absent while there is no rate yet.
	LeftSeconds *float64 `json:"left_seconds,omitempty"`
}

// Percent is how much is done, 0 to 100.
func (p Progress) Percent() int {
	if p.Total == 0 {
		return 100
	}
	return int(min(p.Done*100/p.Total, 100))
}

// pauseRoutes are the pause and resume routes (registered in allRoutes).
var pauseRoutes = []route{
	{"POST", "/api/v1/tables/{table}/pause", RoleOperator, func(s *Server) func(http.ResponseWriter, *http.Request, Principal) { return s.pauseAPI(true) }},
	{"POST", "/api/v1/tables/{table}/resume", RoleOperator, func(s *Server) func(http.ResponseWriter, *http.Request, Principal) { return s.pauseAPI(false) }},
}

func (s *Server) setPaused(ctx context.Context, table, actor string, pause bool) (bool, error) {
	if s.Pauses == nil {
		return false, errNoPauses
	}
	if pause {
		return s.Pauses.Pause(ctx, table, actor)
	}
	return s.Pauses.Resume(ctx, table, actor)
}

var errNoPauses = errors.New("this server cannot pause tables")

func (s *Server) pauseAPI(pause bool) func(http.ResponseWriter, *http.Request, Principal) {
	return func(w http.ResponseWriter, r *http.Request, p Principal) {
		if err := validText(r.PathValue, "table"); err != nil {
			problem(w, http.StatusBadRequest, "Invalid table", err.Error())
			return
		}
		table := r.PathValue("table")
		changed, err := s.setPaused(r.Context(), table, p.Name, pause)
		switch {
		case errors.Is(err, ErrUnknownTable):
			problem(w, http.StatusNotFound, "Unknown table", "no mapping has the table "+table)
			return
		case errors.Is(err, errNoPauses):
			problem(w, http.StatusNotImplemented, "Not offered", err.Error())
			return
		case err != nil:
			s.unavailable(w, err)
			return
		}
		state := StateRunning
		if pause {
			state = StatePaused
		}
		writeJSON(w, http.StatusOK, map[string]any{"table": table, "state": state, "changed": changed})
	}
}

// tableStates adds the tables' states to a status answer; without Pauses it adds nothing.
func (s *Server) tableStates(ctx context.Context, out map[string]any) {
	if s.Pauses == nil {
		return
	}
	states, err := s.Pauses.States(ctx)
	if err != nil {
		s.logWarn("reading the tables' states", err)
		return
	}
	out["table_states"] = states
	if runs, err := s.latestRuns(ctx); err != nil {
		s.logWarn("reading the coupling runs", err)
	} else if runs != nil {
		out["coupling_runs"] = runs
	}
}

// tablesRoutes are the tables page and its pause and resume buttons (without Pauses, none).
func (s *Server) tablesRoutes(mux *http.ServeMux) {
	s.progressPageRoutes(mux)
	if s.Pauses == nil {
		return
	}
	mux.HandleFunc("GET /tables", s.page(RoleViewer, s.tablesPage))
	mux.HandleFunc("POST /tables/{table}/{action}", s.page(RoleOperator, s.tablesForm))
}

func (s *Server) tablesPage(w http.ResponseWriter, r *http.Request, d pageData) {
	states, err := s.Pauses.States(r.Context())
	if err != nil {
		s.logWarn("reading the tables' states", err)
		http.Error(w, "The tables' states could not be read; try again.", http.StatusServiceUnavailable)
		return
	}
	d.Title, d.Nav, d.States = "Tables", "tables", states
	s.render(w, "tables.html", d)
}

func (s *Server) tablesForm(w http.ResponseWriter, r *http.Request, d pageData) {
	action := r.PathValue("action")
	if action != "pause" && action != "resume" {
		http.NotFound(w, r)
		return
	}
	if err := validText(r.PathValue, "table"); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	_, err := s.setPaused(r.Context(), r.PathValue("table"), d.User, action == "pause")
	switch {
	case errors.Is(err, ErrUnknownTable):
		http.Error(w, "No mapping has this table.", http.StatusNotFound)
		return
	case err != nil:
		s.logWarn("pausing or resuming a table", err)
		http.Error(w, "The table's state could not be changed; try again.", http.StatusServiceUnavailable)
		return
	}
	http.Redirect(w, r, "/tables", http.StatusSeeOther)
}

// secondsLeft shows a time left, to the second.
func secondsLeft(s float64) string { return (time.Duration(s) * time.Second).String() }
