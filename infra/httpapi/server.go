// Package httpapi serves what every dvsync process shows over HTTP: /healthz, /metrics and, where
// the errors ledger is at hand, the JSON API under /api/v1/.
package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/postgres"
	"github.com/dvsync/dvsync/infra/telemetry"
)

// ErrorLister reads the errors ledger.
type ErrorLister interface {
	ListErrors(ctx context.Context, f postgres.ErrorFilter) ([]postgres.StoredError, error)
}

// Check is one dependency of the process (NATS, PostgreSQL) that /healthz asks.
type Check func(ctx context.Context) error

// Server builds the HTTP handler.
type Server struct {
	Metrics *telemetry.Metrics
	Checks  map[string]Check
	Errors  ErrorLister // nil: no /api/v1/errors
}

// Handler returns the routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.health)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.Metrics.Registry, promhttp.HandlerOpts{Registry: s.Metrics.Registry}))
	if s.Errors != nil {
		mux.HandleFunc("GET /api/v1/errors", s.listErrors)
	}
	return mux
}

// health answers 200 when every check passes, else 503; the body says which failed.
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	results, status := map[string]string{}, http.StatusOK
	for name, check := range s.Checks {
		if err := check(ctx); err != nil {
			results[name], status = err.Error(), http.StatusServiceUnavailable
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

func (s *Server) listErrors(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := postgres.ErrorFilter{Class: domain.Class(q.Get("class")), Status: postgres.ErrorStatus(q.Get("status")),
		Table: q.Get("table"), Key: q.Get("key"), Limit: 100}
	switch f.Class {
	case "", domain.ClassCoupling, domain.ClassSetup:
	default:
		problem(w, http.StatusBadRequest, "Invalid class", fmt.Sprintf("class %q is not coupling or setup", f.Class))
		return
	}
	switch f.Status {
	case "", postgres.ErrorOpen, postgres.ErrorResolved, postgres.ErrorReplayed:
	default:
		problem(w, http.StatusBadRequest, "Invalid status", fmt.Sprintf("status %q is not open, resolved or replayed", f.Status))
		return
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			problem(w, http.StatusBadRequest, "Invalid limit", fmt.Sprintf("limit %q is not a number from 1 to 1000", l))
			return
		}
		f.Limit = n
	}
	list, err := s.Errors.ListErrors(r.Context(), f)
	if err != nil {
		problem(w, http.StatusServiceUnavailable, "Errors ledger unavailable", "the errors ledger could not be read; try again")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"errors": list})
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
