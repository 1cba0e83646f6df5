// Package httpapi serves what every dvsync process shows over HTTP: /healthz, /readyz, /metrics
// and, where the errors ledger is at hand, the JSON API under /api/v1/.
package httpapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dvsync/dvsync/infra/redact"
	"github.com/dvsync/dvsync/infra/telemetry"
)

// Check is one dependency of the process (NATS, PostgreSQL) that /healthz or /readyz asks.
type Check func(ctx context.Context) error

// Server builds the HTTP handler.
type Server struct {
	Metrics *telemetry.Metrics
	// Checks are what /healthz asks (liveness); Ready what /readyz asks: whether the process can
	// take work now.
	Checks map[string]Check
	Ready  map[string]Check
	// Ledger, Replay and Tokens serve the API under /api/v1/; without a Ledger there is none.
	Ledger Ledger
	Replay Replayer
	// CoupleRun runs match-based coupling for a table (POST /api/v1/couplings/{table}/match).
	CoupleRun CouplingRunner
	// Coupling runs the coupling actions (couple, uncouple, sync now, restore, delete coupling).
	Coupling CouplingActions
	// Pauses pauses and resumes tables (POST /api/v1/tables/{table}/pause|resume).
	Pauses TablePauses
	Tokens *Tokens
	// Lag is the workers' consumer lag (changes not yet handled), for /api/v1/status.
	Lag func(ctx context.Context) (uint64, error)
	Log *slog.Logger
	// Couplings and Links serve the web page; without Couplings there is no page.
	Couplings PageStore
	Links     Links
	// Sources, when set, serves the source view (SourceViewPath) to viewers: a record's newest
	// change event. Off by default: in production source links open the source system (Business
	// Central); dev has none, and points its source links here.
	Sources SourceFinder
	// SessionKey signs the page's session cookies; a random one is made when empty (sessions then
	// end when the process restarts and are not shared between replicas).
	SessionKey []byte
	keyOnce    sync.Once
	signIns    *signInLimiter
}

// maxBody bounds the body of every request that may have one; the API's and the page's are small.
const maxBody = 1 << 20

// Handler returns the routes. Every request that is not GET, HEAD or OPTIONS must come from the
// same origin when a browser sends it (Sec-Fetch-Site, else Origin against Host), the login
// form included, and its body is bounded.
func (s *Server) Handler() http.Handler {
	s.signIns = newSignInLimiter()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { s.health(w, r, s.Checks) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) { s.health(w, r, s.Ready) })
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.Metrics.Registry, promhttp.HandlerOpts{Registry: s.Metrics.Registry}))
	if s.Ledger != nil {
		s.apiRoutes(mux)
		if s.Couplings != nil {
			s.pageRoutes(mux)
		}
	}
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(s.crossOrigin))
	return cop.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
		default:
			r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		}
		mux.ServeHTTP(w, r)
	}))
}

// crossOrigin refuses a browser's request that another site sent (login CSRF, forged forms).
func (s *Server) crossOrigin(w http.ResponseWriter, r *http.Request) {
	if s.Log != nil {
		s.Log.Warn("cross-origin request refused", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
	}
	if strings.HasPrefix(r.URL.Path, "/api/") {
		problem(w, http.StatusForbidden, "Cross-origin request", "this request came from another site; it is not accepted")
		return
	}
	http.Error(w, "This form was sent from another site: it is not accepted. Open the page itself and try again.", http.StatusForbidden)
}

// logWarn logs a failure with credentials taken out of its text.
func (s *Server) logWarn(msg string, err error) {
	if s.Log != nil {
		s.Log.Warn(msg, "err", redact.Text(err.Error()))
	}
}

// health answers 200 when every check passes, else 503; the body says which failed, and only
// that: why (which names users, hosts and addresses) goes to the log. The checks run at once, so
// that one that hangs until the deadline (JetStream while NATS is away) leaves the others theirs.
func (s *Server) health(w http.ResponseWriter, r *http.Request, checks map[string]Check) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	errs := make(map[string]error, len(checks))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, check := range checks {
		wg.Go(func() {
			err := check(ctx)
			mu.Lock()
			errs[name] = err
			mu.Unlock()
		})
	}
	wg.Wait()
	results, status := map[string]string{}, http.StatusOK
	for name, err := range errs {
		if err != nil {
			results[name], status = "unavailable", http.StatusServiceUnavailable
			if s.Log != nil {
				s.Log.Warn("health check failed", "path", r.URL.Path, "check", name, "err", redact.Text(err.Error()))
			}
		} else {
			results[name] = "ok"
		}
	}
	overall := "ok"
	if status != http.StatusOK {
		overall = "unavailable"
	}
	writeJSON(w, status, map[string]any{"status": overall, "checks": results})
}

// problem writes an RFC 9457 problem body.
func problem(w http.ResponseWriter, status int, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "about:blank", "title": title, "status": status, "detail": detail})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
