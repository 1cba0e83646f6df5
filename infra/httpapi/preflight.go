package httpapi

import (
	"context"
	"net/http"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// maxPreflightShown bounds the preflight errors the API and the banner read: a setup has a few
// dozen checks per mapped table at most.
const maxPreflightShown = 500

// openPreflight are the preflight errors the ledger holds open: the gaps of the workers' latest
// checks (a check that no longer finds one resolves it).
func (s *Server) openPreflight(ctx context.Context, limit int) ([]storage.StoredError, error) {
	page, err := s.Ledger.PageErrors(ctx, storage.ErrorFilter{Table: domain.PreflightTable, Status: storage.ErrorOpen, Limit: limit})
	if err != nil {
		return nil, err
	}
	out := page.Errors[:0]
	for _, e := range page.Errors {
		if e.Stage == domain.PreflightStage {
			out = append(out, e)
		}
	}
	return out, nil
}

// preflight is GET /api/v1/preflight: the open preflight errors, ok when there are none.
func (s *Server) preflight(w http.ResponseWriter, r *http.Request, _ Principal) {
	open, err := s.openPreflight(r.Context(), maxPreflightShown)
	if err != nil {
		s.unavailable(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": len(open) == 0, "errors": open})
}
