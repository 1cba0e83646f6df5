package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/consumers/coupling"
	"github.com/dvsync/dvsync/domain"
)

// CouplingActions are a person's coupling actions on one record (coupling.Actions).
type CouplingActions interface {
	Couple(ctx context.Context, table, key string, row uuid.UUID, actor string) (coupling.Result, error)
	Uncouple(ctx context.Context, table, key, actor string) (coupling.Result, error)
	SyncNow(ctx context.Context, table, key, actor string) (coupling.Result, error)
	Restore(ctx context.Context, table, key, actor string) (coupling.Result, error)
	DeleteCoupling(ctx context.Context, table, key, actor string) (coupling.Result, error)
}

// couplingRoutes are the coupling actions' API routes (registered in routes).
var couplingRoutes = []route{
	{"POST", "/api/v1/couplings/{table}/{key}/couple", RoleOperator, func(s *Server) func(http.ResponseWriter, *http.Request, Principal) { return s.coupleAPI }},
	{"POST", "/api/v1/couplings/{table}/{key}/uncouple", RoleOperator, apiAction(domain.ActionUncouple)},
	{"POST", "/api/v1/couplings/{table}/{key}/sync", RoleOperator, apiAction(domain.ActionSyncNow)},
	{"POST", "/api/v1/couplings/{table}/{key}/restore", RoleOperator, apiAction(domain.ActionRestore)},
	{"DELETE", "/api/v1/couplings/{table}/{key}", RoleOperator, apiAction(domain.ActionDeleteCoupling)},
}

// runAction runs one of the actions that take no more than the record.
func (s *Server) runAction(ctx context.Context, a domain.CouplingAction, table, key, actor string) (coupling.Result, error) {
	if s.Coupling == nil {
		return coupling.Result{}, errNoActions
	}
	switch a {
	case domain.ActionUncouple:
		return s.Coupling.Uncouple(ctx, table, key, actor)
	case domain.ActionSyncNow:
		return s.Coupling.SyncNow(ctx, table, key, actor)
	case domain.ActionRestore:
		return s.Coupling.Restore(ctx, table, key, actor)
	case domain.ActionDeleteCoupling:
		return s.Coupling.DeleteCoupling(ctx, table, key, actor)
	}
	return coupling.Result{}, fmt.Errorf("no coupling action %q", a.Command)
}

var errNoActions = errors.New("this server offers no coupling actions")

func apiAction(a domain.CouplingAction) func(*Server) func(http.ResponseWriter, *http.Request, Principal) {
	return func(s *Server) func(http.ResponseWriter, *http.Request, Principal) {
		return func(w http.ResponseWriter, r *http.Request, p Principal) {
			if err := validText(r.PathValue, "table", "key"); err != nil {
				problem(w, http.StatusBadRequest, "Invalid record", err.Error())
				return
			}
			res, err := s.runAction(r.Context(), a, r.PathValue("table"), r.PathValue("key"), p.Name)
			s.actionAnswer(w, res, err)
		}
	}
}

func (s *Server) coupleAPI(w http.ResponseWriter, r *http.Request, p Principal) {
	if err := validText(r.PathValue, "table", "key"); err != nil {
		problem(w, http.StatusBadRequest, "Invalid record", err.Error())
		return
	}
	var body struct {
		RowID string `json:"row_id"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<12)).Decode(&body); err != nil {
		problem(w, http.StatusBadRequest, "Invalid body", `send the Dataverse row's id as {"row_id":"<guid>"}`)
		return
	}
	row, err := uuid.Parse(body.RowID)
	if err != nil {
		problem(w, http.StatusBadRequest, "Invalid row id", fmt.Sprintf("row_id %q is not a GUID", body.RowID))
		return
	}
	if s.Coupling == nil {
		s.actionAnswer(w, coupling.Result{}, errNoActions)
		return
	}
	res, err := s.Coupling.Couple(r.Context(), r.PathValue("table"), r.PathValue("key"), row, p.Name)
	s.actionAnswer(w, res, err)
}

// actionFailure is how an action's error is answered: its status, title and what to tell.
func actionFailure(err error) (int, string, string) {
	var refused *coupling.Refusal
	switch {
	case errors.As(err, &refused):
		return http.StatusConflict, "Refused", refused.Message
	case errors.Is(err, coupling.ErrUnknownTable):
		return http.StatusNotFound, "Not found", "no mapping covers this table"
	case errors.Is(err, domain.ErrRowBusy):
		return http.StatusConflict, "Busy", "a worker is coupling another record to this Dataverse row right now; try again in a moment"
	case errors.Is(err, domain.ErrRecordBusy):
		return http.StatusConflict, "Busy", "a worker is syncing the record right now; try again in a moment"
	case errors.Is(err, errNoActions):
		return http.StatusNotImplemented, "Not available", "this server offers no coupling actions"
	}
	return http.StatusServiceUnavailable, "Unavailable", "the action could not be done; try again"
}

func (s *Server) actionAnswer(w http.ResponseWriter, res coupling.Result, err error) {
	if err != nil {
		status, title, detail := actionFailure(err)
		if status == http.StatusServiceUnavailable {
			s.logWarn("coupling action failed", err)
		}
		problem(w, status, title, detail)
		return
	}
	writeJSON(w, http.StatusOK, res)
}
