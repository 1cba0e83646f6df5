package httpapi

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/consumers/replay"
	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

//go:embed templates/*.html
var templateFS embed.FS

// Links builds the links from an error to its rows.
type Links struct {
	// DataverseURL is the environment's URL; rows open as main.aspx?etn=<entity>&id=<id>&pagetype=entityrecord.
	DataverseURL string
	// SourceURL is a template of a source record's URL with {table} and {key}, e.g. a Business
	// Central web client link; empty: no source links.
	SourceURL string
}

// PageStore is what the page needs besides the Ledger: the coupled records, deleting one error
// and the signed-out sessions.
type PageStore interface {
	ListCouplings(ctx context.Context, f storage.CouplingFilter) ([]domain.Coupling, error)
	DeleteError(ctx context.Context, id int64, actor string) error
	SessionStore
}

var pageTemplates = template.Must(template.New("").Funcs(template.FuncMap{
	"fmtTime":     fmtTime,
	"secondsLeft": secondsLeft,
	"kindWords":   func(k domain.Kind) string { return k.Words() },
	"isoTime":     func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"times": func(n int) string {
		if n == 1 {
			return "once"
		}
		return fmt.Sprintf("%d times", n)
	},
}).ParseFS(templateFS, "templates/*.html"))

// fmtTime shows a time in UTC with its zone: a page read in another zone, or pasted into a
// ticket, is never ambiguous.
func fmtTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 MST") }

// pageData is what every page template gets.
type pageData struct {
	Title, Nav, User, CSRF, Flash, Problem string
	Role                                   Role
	Operator                               bool
	s                                      *Server
	// SetupGaps counts the open preflight errors, for the setup banner every page shows.
	SetupGaps int

	Filter   storage.ErrorFilter
	Statuses []string
	// Kinds and Tables are the filters' choices; Return is the list as shown, where its forms
	// come back to.
	Kinds     []domain.Kind
	Tables    []string
	Return    string
	Errors    []storage.StoredError
	Next      string
	NextLink  string
	Error     storage.ErrorDetail
	CFilter   storage.CouplingFilter
	CStatuses []string
	Couplings []domain.Coupling
	Audit     []storage.AuditEntry
	States    []TableRun
	Runs      []RunView // a table's coupling runs (progress.go)
	Source    sourceView

	Question, Action, Button, Back string
	Hidden                         []hidden

	session session
}

type hidden struct{ Name, Value string }

// SourceLink is the source record of an error, when a template is configured.
func (d pageData) SourceLink(e storage.StoredError) string {
	if d.s.Links.SourceURL == "" || strings.HasPrefix(e.Key, "seq:") {
		return ""
	}
	return sourceLink(d.s.Links.SourceURL, e.Table, e.Key)
}

// sourceLink fills a source-link template: escaped as a path segment before its query (a "/"
// or a "+" of a key stays in the key), as a query value after.
func sourceLink(template, table, key string) string {
	path, query, hasQuery := strings.Cut(template, "?")
	out := strings.NewReplacer("{table}", url.PathEscape(table), "{key}", url.PathEscape(key)).Replace(path)
	if hasQuery {
		out += "?" + strings.NewReplacer("{table}", url.QueryEscape(table), "{key}", url.QueryEscape(key)).Replace(query)
	}
	return out
}

// VersionOf is the source version a record last synced (or was deleted or uncoupled) at, or a
// dash when none did: version 0 is a version, so the coupling's zero value cannot say it.
func (d pageData) VersionOf(c domain.Coupling) string {
	if c.LastSyncedAt.IsZero() && c.Status != domain.CouplingUncoupled {
		return "—"
	}
	return strconv.FormatInt(c.Version, 10)
}

// ReturnToList is where the detail page's Delete returns: the list of the error's class.
func (d pageData) ReturnToList() string {
	return "/errors?" + url.Values{"class": {string(d.Error.Class)}}.Encode()
}

// DestinationLink is the Dataverse row of an error.
func (d pageData) DestinationLink(e storage.StoredError) string {
	if e.RowID == nil || e.Entity == nil {
		return ""
	}
	return d.s.rowLink(*e.Entity, *e.RowID)
}

// RowLink is the Dataverse row of a coupling.
func (d pageData) RowLink(c domain.Coupling) string {
	if c.RowID == uuid.Nil {
		return ""
	}
	return d.s.rowLink(c.Entity, c.RowID)
}

// RowName is the primary name of an error's Dataverse row, when the error knows it.
func (d pageData) RowName(e storage.StoredError) string { return e.Details["row_name"] }

func (s *Server) rowLink(entity string, id uuid.UUID) string {
	if s.Links.DataverseURL == "" || entity == "" {
		return ""
	}
	return fmt.Sprintf("%s/main.aspx?etn=%s&id=%s&pagetype=entityrecord", strings.TrimRight(s.Links.DataverseURL, "/"),
		url.QueryEscape(entity), id)
}

func (s *Server) pageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("POST /logout", s.page(RoleViewer, func(w http.ResponseWriter, r *http.Request, d pageData) {
		if err := s.endSession(w, r, d.session); err != nil {
			s.logWarn("signing out", err)
			http.Error(w, "Signing out failed: the session store could not be reached; try again.", http.StatusServiceUnavailable)
			return
		}
		http.Redirect(w, r, "/login", http.StatusSeeOther)
	}))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/errors?class=coupling", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /errors", s.page(RoleViewer, s.errorsPage))
	mux.HandleFunc("GET /errors/{id}", s.page(RoleViewer, s.errorPage))
	mux.HandleFunc("POST /errors/{id}/replay", s.page(RoleOperator, s.replayForm))
	mux.HandleFunc("POST /errors/{id}/delete", s.page(RoleOperator, s.deleteForm))
	mux.HandleFunc("POST /errors/replay-shown", s.page(RoleOperator, s.replayShown))
	mux.HandleFunc("POST /errors/delete-old", s.page(RoleOperator, s.deleteOld))
	mux.HandleFunc("POST /errors/delete-all", s.page(RoleOperator, s.deleteAll))
	mux.HandleFunc("GET /couplings", s.page(RoleViewer, s.couplingsPage))
	mux.HandleFunc("POST /couplings/match", s.page(RoleOperator, s.coupleForm))
	mux.HandleFunc("POST /couplings/{table}/{key}/{action}", s.page(RoleOperator, s.couplingForm))
	mux.HandleFunc("GET /audit", s.page(RoleViewer, s.auditPage))
	s.tablesRoutes(mux)
	if s.Sources != nil {
		mux.HandleFunc("GET "+SourceViewPath, s.page(RoleViewer, s.sourcePage))
	}
}

// page wraps a page handler: a signed-in session with the role, and a valid CSRF token on posts.
func (s *Server) page(need Role, h func(http.ResponseWriter, *http.Request, pageData)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ses, p, err := s.sessionOf(r)
		if errors.Is(err, errNoSession) {
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		if err != nil {
			s.logWarn("reading the signed-out sessions", err)
			http.Error(w, "The session could not be checked; try again.", http.StatusServiceUnavailable)
			return
		}
		d := pageData{User: p.Name, Role: p.Role, CSRF: ses.CSRF, Operator: p.Role == RoleOperator, s: s,
			Flash: flashOf(r.URL.Query()), session: ses}
		// The banner is a hint: a ledger that does not answer fails the page's own query anyway.
		if open, err := s.openPreflight(r.Context(), maxPreflightShown); err == nil {
			d.SetupGaps = len(open)
		}
		if !p.Role.allows(need) {
			http.Error(w, "Only an operator may do this.", http.StatusForbidden)
			return
		}
		if r.Method == http.MethodPost {
			if err := r.ParseForm(); err != nil || !validCSRF(r, ses) {
				http.Error(w, "The form has expired or did not come from this page: reload it and try again.", http.StatusForbidden)
				return
			}
		}
		h(w, r, d)
	}
}

func (s *Server) render(w http.ResponseWriter, name string, d pageData) {
	s.renderStatus(w, http.StatusOK, name, d)
}

// renderStatus renders a page with its status, after the headers every page has.
func (s *Server) renderStatus(w http.ResponseWriter, status int, name string, d pageData) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	if err := pageTemplates.ExecuteTemplate(w, name, d); err != nil && s.Log != nil {
		s.Log.Warn("rendering a page", "page", name, "err", err)
	}
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, "login.html", pageData{Title: "Sign in", s: s})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		status := http.StatusBadRequest
		if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
			status = http.StatusRequestEntityTooLarge
		}
		http.Error(w, "The form could not be read.", status)
		return
	}
	// The token first: a valid one always signs in, however many failures its address has sent.
	hash, _, ok := s.Tokens.lookup(strings.TrimSpace(r.PostFormValue("token")))
	if !ok {
		if wait, limited := s.failedSignIn(r); limited {
			tooMany(w, wait)
			s.renderStatus(w, http.StatusTooManyRequests, "login.html", pageData{Title: "Sign in",
				Problem: "That token is not valid, and too many tokens that are not valid came from this address; wait a minute and try again.", s: s})
			return
		}
		s.renderStatus(w, http.StatusUnauthorized, "login.html", pageData{Title: "Sign in", Problem: "That token is not valid.", s: s})
		return
	}
	s.startSession(w, r, hash)
	http.Redirect(w, r, "/errors?class=coupling", http.StatusSeeOther)
}

func (s *Server) errorsPage(w http.ResponseWriter, r *http.Request, d pageData) {
	q := r.URL.Query()
	if q.Get("class") == "" {
		q.Set("class", string(domain.ClassCoupling))
	}
	if !q.Has("status") {
		q.Set("status", string(storage.ErrorOpen))
	}
	f, err := filterFrom(q.Get)
	if err != nil {
		d.Flash = err.Error()
		f = storage.ErrorFilter{Class: domain.ClassCoupling, Status: storage.ErrorOpen, Limit: 100}
	}
	page, err := s.Ledger.PageErrors(r.Context(), f)
	if err != nil {
		http.Error(w, "The errors ledger could not be read; try again.", http.StatusServiceUnavailable)
		return
	}
	d.Filter, d.Errors, d.Next = f, redactErrors(page.Errors), page.Next
	d.Statuses = []string{"open", "replayed", "resolved", ""}
	d.Kinds = withCurrent(domain.KindsOf(f.Class), f.Kind)
	d.Tables = withCurrent(domain.KnownTables, f.Table)
	d.Return = "/errors?" + listQuery(q).Encode()
	d.Nav, d.Title = string(f.Class), "Coupling errors"
	if f.Class == domain.ClassSetup {
		d.Title = "Setup errors"
	}
	if page.Next != "" {
		q.Set("cursor", page.Next)
		d.NextLink = "/errors?" + q.Encode()
	}
	s.render(w, "errors.html", d)
}

func (s *Server) errorPage(w http.ResponseWriter, r *http.Request, d pageData) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	e, err := s.Ledger.GetError(r.Context(), id)
	if errors.Is(err, storage.ErrNotFound) {
		http.NotFound(w, r)
		return
	}
	if err != nil {
		http.Error(w, "The errors ledger could not be read; try again.", http.StatusServiceUnavailable)
		return
	}
	d.Error, d.Title, d.Nav = redactDetail(e), fmt.Sprintf("Error %d", id), string(e.Class)
	s.render(w, "error.html", d)
}

// flashes are the messages a page shows after an action. They come back in the URL as a code
// and numbers (?msg=deleted&id=4): only these codes render, so that no link can put words of
// its own in the page.
var flashes = map[string]string{
	string(replay.Published):        "Error {id}: published; its change is being synced again.",
	string(replay.Stale):            "Error {id}: stale; a newer version has synced since, and the error is resolved.",
	string(replay.AlreadyReplaying): "Error {id} is already being replayed.",
	string(replay.NotReplayable):    "Error {id} cannot be replayed: it is resolved, or no change of it is kept.",
	string(replay.NotFound):         "There is no error {id}.",
	string(replay.Failed):           "Error {id}: the replay failed; try again.",
	"replay_other":                  "Error {id}: see its details for how the replay went.",
	"deleted":                       "Error {id} deleted.",
	"deleted_many":                  "{n} errors deleted.",
	"replayed_shown":                "{n} of {of} errors replayed.",
	"coupling_run_started":          "Coupling run started: its progress shows below, and in dvsync status.",
	"coupling_run_busy":             "A coupling run of this table is in progress already: its progress shows below.",
	"coupling_run":                  "Coupling run: {n} records without a row sent again: {coupled} coupled, {created} created, {failed} failed, {pending} still running.",
}

// flashNumbers are the numbers a flash may carry.
var flashNumbers = []string{"id", "n", "of", "coupled", "created", "failed", "pending"}

// flashOf renders the message of a page's query, or "" when its code or a number is not valid.
func flashOf(q url.Values) string {
	text, ok := flashes[q.Get("msg")]
	if !ok {
		return ""
	}
	for _, name := range flashNumbers {
		if !strings.Contains(text, "{"+name+"}") {
			continue
		}
		n, err := strconv.ParseInt(q.Get(name), 10, 64)
		if err != nil || n < 0 {
			return ""
		}
		text = strings.ReplaceAll(text, "{"+name+"}", strconv.FormatInt(n, 10))
	}
	return text
}

// withCurrent is a filter's choices with the value in force added when it is not one of them
// (a link may name a table or kind this version does not list): the choice shown stays true.
func withCurrent[T ~string](known []T, current T) []T {
	for _, k := range known {
		if k == current {
			return known
		}
	}
	if current == "" {
		return known
	}
	return append(append([]T{}, known...), current)
}

// listQuery is a list's query without what is not the list itself: its page and a message.
func listQuery(q url.Values) url.Values {
	out := url.Values{}
	for k, v := range q {
		out[k] = v
	}
	for _, name := range append([]string{"msg", "cursor"}, flashNumbers...) {
		out.Del(name)
	}
	return out
}

// returnPath is a page a form may return to: the error list, one error, or the coupled records.
var returnPath = regexp.MustCompile(`^/(errors(/[0-9]+)?|couplings)$`)

// returnTo is the page a form was posted from: as its "return" field says (a path of this
// server), else its Referer (of this host), else the error list. Only the error list or one
// error's page: no form or link can send a person elsewhere.
func returnTo(r *http.Request) url.URL {
	if u, err := url.Parse(r.PostFormValue("return")); err == nil && u.Scheme == "" && u.Host == "" && u.User == nil && returnPath.MatchString(u.Path) {
		return url.URL{Path: u.Path, RawQuery: u.RawQuery}
	}
	// After a confirmation step the referrer is the action's own URL: not a page to return to.
	if u, err := url.Parse(r.Referer()); err == nil && u.Host == r.Host && returnPath.MatchString(u.Path) {
		return url.URL{Path: u.Path, RawQuery: u.RawQuery}
	}
	return url.URL{Path: "/errors"}
}

// back returns to the page the form was posted from (returnTo), with a message: a code of
// flashes and its numbers.
func back(w http.ResponseWriter, r *http.Request, code string, numbers map[string]int64) {
	to := returnTo(r)
	q := listQuery(to.Query())
	q.Set("msg", code)
	for name, n := range numbers {
		q.Set(name, strconv.FormatInt(n, 10))
	}
	to.RawQuery = q.Encode()
	http.Redirect(w, r, to.String(), http.StatusSeeOther)
}

func (s *Server) replayForm(w http.ResponseWriter, r *http.Request, d pageData) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	res := s.Replay.Replay(r.Context(), []int64{id}, d.User)[0]
	code := string(res.Outcome)
	if _, ok := flashes[code]; !ok {
		code = "replay_other"
	}
	back(w, r, code, map[string]int64{"id": id})
}

func (s *Server) deleteForm(w http.ResponseWriter, r *http.Request, d pageData) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	if err := s.Couplings.DeleteError(r.Context(), id, d.User); err != nil && !errors.Is(err, storage.ErrNotFound) {
		http.Error(w, "The error could not be deleted; try again.", http.StatusServiceUnavailable)
		return
	}
	back(w, r, "deleted", map[string]int64{"id": id})
}

// confirm renders the confirmation step of a bulk action, unless the form says it is confirmed.
func (s *Server) confirmed(w http.ResponseWriter, r *http.Request, d pageData, title, question, button string, keep ...string) bool {
	if r.PostFormValue("confirm") == "yes" {
		return true
	}
	d.Title, d.Question, d.Button, d.Action = title, question, button, r.URL.Path
	back := returnTo(r)
	d.Back, d.Return = back.String(), back.String()
	for _, name := range keep {
		for _, v := range r.PostForm[name] {
			d.Hidden = append(d.Hidden, hidden{name, v})
		}
	}
	s.render(w, "confirm.html", d)
	return false
}

func (s *Server) replayShown(w http.ResponseWriter, r *http.Request, d pageData) {
	var ids []int64
	for _, v := range r.PostForm["id"] {
		if id, err := strconv.ParseInt(v, 10, 64); err == nil {
			ids = append(ids, id)
		}
	}
	if !s.confirmed(w, r, d, "Retry all shown", fmt.Sprintf("Replay the changes of the %d errors shown?", len(ids)), "Retry them", "id") {
		return
	}
	published := 0
	for _, res := range s.Replay.Replay(r.Context(), ids, d.User) {
		if res.Outcome == "published" {
			published++
		}
	}
	back(w, r, "replayed_shown", map[string]int64{"n": int64(published), "of": int64(len(ids))})
}

func (s *Server) deleteOld(w http.ResponseWriter, r *http.Request, d pageData) {
	days, cutoff, err := olderThan(r.PostFormValue("days"))
	if err != nil {
		http.Error(w, "The form's "+err.Error()+".", http.StatusBadRequest)
		return
	}
	if !s.confirmed(w, r, d, "Delete old entries", fmt.Sprintf("Delete every error last seen more than %d days ago? Errors still relevant may be among them.", days), "Delete them", "days") {
		return
	}
	n, err := s.Ledger.DeleteErrors(r.Context(), cutoff, d.User)
	if err != nil {
		http.Error(w, "The errors could not be deleted; try again.", http.StatusServiceUnavailable)
		return
	}
	back(w, r, "deleted_many", map[string]int64{"n": n})
}

func (s *Server) deleteAll(w http.ResponseWriter, r *http.Request, d pageData) {
	if !s.confirmed(w, r, d, "Delete all entries", "Delete every error, open ones too? Couplings are kept.", "Delete all") {
		return
	}
	n, err := s.Ledger.DeleteErrors(r.Context(), time.Time{}, d.User)
	if err != nil {
		http.Error(w, "The errors could not be deleted; try again.", http.StatusServiceUnavailable)
		return
	}
	back(w, r, "deleted_many", map[string]int64{"n": n})
}

func (s *Server) couplingsPage(w http.ResponseWriter, r *http.Request, d pageData) {
	q := r.URL.Query()
	f := storage.CouplingFilter{Table: q.Get("table"), Status: domain.CouplingStatus(q.Get("status")), Skipped: q.Get("skipped") == "true", Text: q.Get("q")}
	if err := validText(q.Get, "table", "status", "q"); err != nil {
		d.Flash = err.Error()
		f = storage.CouplingFilter{}
	}
	list, err := s.Couplings.ListCouplings(r.Context(), f)
	if err != nil {
		http.Error(w, "The couplings could not be read; try again.", http.StatusServiceUnavailable)
		return
	}
	d.Title, d.Nav, d.CFilter, d.Couplings = "Coupled records", "couplings", f, list
	d.Return = "/couplings?" + q.Encode()
	d.Tables = withCurrent(domain.KnownTables, f.Table)
	d.CStatuses = []string{"", "synced", "failed", "deleted", "uncoupled"}
	d.Runs = s.runsOf(r.Context(), f.Table)
	s.render(w, "couplings.html", d)
}

func (s *Server) auditPage(w http.ResponseWriter, r *http.Request, d pageData) {
	entries, err := s.Ledger.Audit(r.Context(), 500)
	if err != nil {
		http.Error(w, "The audit log could not be read; try again.", http.StatusServiceUnavailable)
		return
	}
	d.Title, d.Nav, d.Audit = "Audit", "audit", entries
	s.render(w, "audit.html", d)
}
