package httpapi

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dvsync/dvsync/consumers/replay"
	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// Ledger is what the API reads and changes of the errors ledger and the couplings.
type Ledger interface {
	PageErrors(ctx context.Context, f storage.ErrorFilter) (storage.ErrorPage, error)
	GetError(ctx context.Context, id int64) (storage.ErrorDetail, error)
	DeleteErrors(ctx context.Context, cutoff time.Time, actor string) (int64, error)
	Audit(ctx context.Context, limit int) ([]storage.AuditEntry, error)
	Status(ctx context.Context) ([]storage.TableStatus, error)
	Coupling(ctx context.Context, table, key string) (domain.Coupling, error)
}

// Replayer replays errors.
type Replayer interface {
	Replay(ctx context.Context, ids []int64, actor string) []replay.Result
}

// allRoutes are the routes of the API: routes and the coupling actions' (couplings.go).
func allRoutes() []route {
	return append(append(append(append([]route{}, routes...), couplingRoutes...), pauseRoutes...), progressRoutes...)
}

//go:embed openapi.yaml
var openAPI []byte

// route is one API route: the OpenAPI file describes exactly these (a test holds them together).
type route struct {
	method, path string
	role         Role
	handle       func(*Server) func(http.ResponseWriter, *http.Request, Principal)
}

var routes = []route{
	{"GET", "/api/v1/errors", RoleViewer, func(s *Server) func(http.ResponseWriter, *http.Request, Principal) { return s.listErrors }},
	{"DELETE", "/api/v1/errors", RoleOperator, func(s *Server) func(http.ResponseWriter, *http.Request, Principal) { return s.deleteErrors }},
	{"GET", "/api/v1/errors/{id}", RoleViewer, func(s *Server) func(http.ResponseWriter, *http.Request, Principal) { return s.getError }},
	{"DELETE", "/api/v1/errors/{id}", RoleOperator, func(s *Server) func(http.ResponseWriter, *http.Request, Principal) { return s.deleteOne }},
	{"POST", "/api/v1/errors/{id}/replay", RoleOperator, func(s *Server) func(http.ResponseWriter, *http.Request, Principal) { return s.replayOne }},
	{"POST", "/api/v1/errors/replay", RoleOperator, func(s *Server) func(http.ResponseWriter, *http.Request, Principal) { return s.replayMatching }},
	{"POST", "/api/v1/couplings/{table}/match", RoleOperator, func(s *Server) func(http.ResponseWriter, *http.Request, Principal) { return s.coupleTable }},
	{"GET", "/api/v1/couplings/{table}/{key}", RoleViewer, func(s *Server) func(http.ResponseWriter, *http.Request, Principal) { return s.getCoupling }},
	{"GET", "/api/v1/status", RoleViewer, func(s *Server) func(http.ResponseWriter, *http.Request, Principal) { return s.status }},
	{"GET", "/api/v1/preflight", RoleViewer, func(s *Server) func(http.ResponseWriter, *http.Request, Principal) { return s.preflight }},
	{"GET", "/api/v1/audit", RoleViewer, func(s *Server) func(http.ResponseWriter, *http.Request, Principal) { return s.audit }},
}

func (s *Server) apiRoutes(mux *http.ServeMux) {
	for _, rt := range allRoutes() {
		mux.HandleFunc(rt.method+" "+rt.path, s.require(rt.role, rt.handle(s)))
	}
	mux.HandleFunc("GET /api/v1/openapi.yaml", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(openAPI)
	})
}

// validText refuses a parameter with a NUL or that is not UTF-8: PostgreSQL cannot compare
// such text, and the client should hear which field is wrong.
func validText(get func(string) string, names ...string) error {
	for _, name := range names {
		v := get(name)
		if !utf8.ValidString(v) {
			return fmt.Errorf("%s is not valid UTF-8", name)
		}
		if strings.ContainsRune(v, 0) {
			return fmt.Errorf("%s contains a NUL character", name)
		}
	}
	return nil
}

// Deleting errors older than a number of days takes 1 to maxDays days.
const maxDays = 36500

// olderThan reads a number of days and returns the time that many days ago.
func olderThan(v string) (int, time.Time, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxDays {
		return 0, time.Time{}, fmt.Errorf("older_than_days %q is not a whole number of days from 1 to %d", v, maxDays)
	}
	// AddDate: a duration of that many days would overflow (about 292 years) and wrap around.
	return n, time.Now().AddDate(0, 0, -n), nil
}

// filterFrom reads the error filter of a query string or a JSON body.
func filterFrom(get func(string) string) (storage.ErrorFilter, error) {
	if err := validText(get, "class", "kind", "status", "table", "key", "q", "since", "until", "limit", "cursor"); err != nil {
		return storage.ErrorFilter{}, err
	}
	f := storage.ErrorFilter{Class: domain.Class(get("class")), Kind: domain.Kind(get("kind")),
		Status: storage.ErrorStatus(get("status")), Table: get("table"), Key: get("key"), Text: get("q"),
		Cursor: get("cursor"), Limit: 100}
	switch f.Class {
	case "", domain.ClassCoupling, domain.ClassSetup:
	default:
		return f, fmt.Errorf("class %q is not coupling or setup", f.Class)
	}
	switch f.Status {
	case "", storage.ErrorOpen, storage.ErrorResolved, storage.ErrorReplayed:
	default:
		return f, fmt.Errorf("status %q is not open, replayed or resolved", f.Status)
	}
	for name, dst := range map[string]*time.Time{"since": &f.Since, "until": &f.Until} {
		if v := get(name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return f, fmt.Errorf("%s %q is not an RFC 3339 time such as 2026-11-24T10:00:00Z", name, v)
			}
			*dst = t
		}
	}
	if l := get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return f, fmt.Errorf("limit %q is not a number from 1 to 1000", l)
		}
		f.Limit = n
	}
	return f, nil
}

func (s *Server) listErrors(w http.ResponseWriter, r *http.Request, _ Principal) {
	f, err := filterFrom(r.URL.Query().Get)
	if err != nil {
		problem(w, http.StatusBadRequest, "Invalid filter", err.Error())
		return
	}
	page, err := s.Ledger.PageErrors(r.Context(), f)
	if errors.Is(err, storage.ErrBadCursor) {
		problem(w, http.StatusBadRequest, "Invalid cursor", "the cursor is not one this API gave; start again without it")
		return
	}
	if err != nil {
		s.unavailable(w, err)
		return
	}
	page.Errors = redactErrors(page.Errors)
	writeJSON(w, http.StatusOK, page)
}

func pathID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		problem(w, http.StatusBadRequest, "Invalid id", fmt.Sprintf("error id %q is not a positive number", r.PathValue("id")))
		return 0, false
	}
	return id, true
}

func (s *Server) getError(w http.ResponseWriter, r *http.Request, _ Principal) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	d, err := s.Ledger.GetError(r.Context(), id)
	if errors.Is(err, storage.ErrNotFound) {
		problem(w, http.StatusNotFound, "Not found", fmt.Sprintf("there is no error %d", id))
		return
	}
	if err != nil {
		s.unavailable(w, err)
		return
	}
	writeJSON(w, http.StatusOK, redactDetail(d))
}

func (s *Server) replayOne(w http.ResponseWriter, r *http.Request, p Principal) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	res := s.Replay.Replay(r.Context(), []int64{id}, p.Name)[0]
	status := map[replay.Outcome]int{replay.Published: 202, replay.Stale: 200, replay.AlreadyReplaying: 409,
		replay.NotReplayable: 409, replay.NotFound: 404, replay.Failed: 503}[res.Outcome]
	writeJSON(w, status, res)
}

// replayMatching replays every open error that matches a filter given as a JSON body.
func (s *Server) replayMatching(w http.ResponseWriter, r *http.Request, p Principal) {
	body := map[string]string{}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body); err != nil {
		problem(w, http.StatusBadRequest, "Invalid body", `send a JSON filter such as {"class":"coupling","table":"customer"}`)
		return
	}
	if body["status"] == "" {
		body["status"] = string(storage.ErrorOpen)
	}
	if body["limit"] == "" {
		body["limit"] = "1000"
	}
	f, err := filterFrom(func(k string) string { return body[k] })
	if err != nil {
		problem(w, http.StatusBadRequest, "Invalid filter", err.Error())
		return
	}
	page, err := s.Ledger.PageErrors(r.Context(), f)
	if err != nil {
		s.unavailable(w, err)
		return
	}
	ids := make([]int64, len(page.Errors))
	for i, e := range page.Errors {
		ids[i] = e.ID
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": s.Replay.Replay(r.Context(), ids, p.Name)})
}

// deleteErrors deletes errors older than ?older_than_days=N (1 to 36500, 7 by default), or every
// one with ?all=true.
func (s *Server) deleteErrors(w http.ResponseWriter, r *http.Request, p Principal) {
	q := r.URL.Query()
	var cutoff time.Time
	switch {
	case q.Get("all") == "true":
	case q.Get("all") != "":
		problem(w, http.StatusBadRequest, "Invalid request", "all must be true, or left out")
		return
	default:
		days := "7"
		if q.Has("older_than_days") {
			days = q.Get("older_than_days")
		}
		var err error
		if _, cutoff, err = olderThan(days); err != nil {
			problem(w, http.StatusBadRequest, "Invalid request", err.Error())
			return
		}
	}
	n, err := s.Ledger.DeleteErrors(r.Context(), cutoff, p.Name)
	if err != nil {
		s.unavailable(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"deleted": n})
}

func (s *Server) deleteOne(w http.ResponseWriter, r *http.Request, p Principal) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	err := s.Couplings.DeleteError(r.Context(), id, p.Name)
	if errors.Is(err, storage.ErrNotFound) {
		problem(w, http.StatusNotFound, "Not found", fmt.Sprintf("there is no error %d", id))
		return
	}
	if err != nil {
		s.unavailable(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"deleted": 1})
}

func (s *Server) getCoupling(w http.ResponseWriter, r *http.Request, _ Principal) {
	if err := validText(r.PathValue, "table", "key"); err != nil {
		problem(w, http.StatusBadRequest, "Invalid record", err.Error())
		return
	}
	c, err := s.Ledger.Coupling(r.Context(), r.PathValue("table"), r.PathValue("key"))
	if err != nil {
		s.unavailable(w, err)
		return
	}
	if !c.Exists {
		problem(w, http.StatusNotFound, "Not found", fmt.Sprintf("%s/%s has never been synced", r.PathValue("table"), r.PathValue("key")))
		return
	}
	out := map[string]any{"table": c.Table, "key": c.Key, "entity": c.Entity, "version": c.Version, "status": c.Status,
		"skipped": c.Skipped, "failures": c.Failures, "last_error_kind": c.LastErrorKind, "coupled": c.Coupled()}
	if c.RowID != [16]byte{} {
		out["row_id"] = c.RowID
	}
	if c.RowName != "" {
		out["row_name"] = c.RowName
	}
	if !c.LastSyncedAt.IsZero() {
		out["last_synced_at"] = c.LastSyncedAt
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) status(w http.ResponseWriter, r *http.Request, _ Principal) {
	tables, err := s.Ledger.Status(r.Context())
	if err != nil {
		s.unavailable(w, err)
		return
	}
	out := map[string]any{"tables": tables}
	if s.Lag != nil {
		if lag, err := s.Lag(r.Context()); err == nil {
			out["consumer_lag"] = lag
		}
	}
	s.tableStates(r.Context(), out)
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request, _ Principal) {
	entries, err := s.Ledger.Audit(r.Context(), 200)
	if err != nil {
		s.unavailable(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": entries})
}

func (s *Server) unavailable(w http.ResponseWriter, err error) {
	s.logWarn("API request failed", err)
	problem(w, http.StatusServiceUnavailable, "Unavailable", "the errors ledger could not be reached; try again")
}
