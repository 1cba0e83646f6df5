package emulator

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/google/uuid"
)

// adminRoutes serves /_emulator/: what a Dataverse administrator or user would do behind
// dvsync's back, for tests and demos. It is not part of the Dataverse API and needs no token.
//
//	GET    /_emulator/rows/{set}             every row of an entity set
//	DELETE /_emulator/rows/{set}/{id}        delete a row
//	PATCH  /_emulator/rows/{set}/{id}        {"name":"..."}: change a row as a Dataverse user would
//	POST   /_emulator/privileges             {"user":"<id>","grant":["prv..."],"revoke":["prv..."]}
//	POST   /_emulator/users/{id}/disable     disable an application user (enable: .../enable)
//	POST   /_emulator/users/{id}/unassign-role take its security role away (assign-role gives it back)
//	POST   /_emulator/apps                   {"clientId":"...","clientSecret":"..."}: one more app registration and its
//	                                         application user, with every privilege and its own service-protection
//	                                         usage; answers {"clientId","userId"}: 201, 200 if registered so already,
//	                                         409 if registered with another secret
//	POST   /_emulator/reset                  drop all rows and added apps, and restore the defaults
//	POST   /_emulator/limits                 {"window":"5m","requests":6000,"executionTime":"20m","concurrent":52,"dopHint":4}
//	                                         per user; zero or missing fields keep Dataverse's numbers
//	POST   /_emulator/latency                {"perRequest":"80ms","perRecord":"4ms"}
//	POST   /_emulator/faults                 {"kind":"status","status":503,"count":2} | {"kind":"slow","delay":"40s","count":1}
//	                                         | {"kind":"drop","count":1} | {"kind":"outage","for":"30s"}
//	DELETE /_emulator/faults                 remove every injected fault
//	POST   /_emulator/definitions            a definition file (like definitions/dataverse.json): add or replace tables
//	GET    /_emulator/stats                  {"inFlight":n, "users":{"<clientId>":{"userId","requests","records",
//	                                         "executionTimeMs","throttled":{"0x80072322":n},"limits":{...}}}}: requests
//	                                         being served (slow ones too), and per application user since the last
//	                                         reset: requests admitted, records they carried, execution time (what the
//	                                         limits count), 429 answers by code, the limits in force (see Stats)
//	POST   /_emulator/tokens/revoke          invalidate every token issued (the next request answers 401)
//	POST   /_emulator/tokens/lifetime        {"lifetime":"2s"}: lifetime of tokens issued from now on (see tokens.go)
//	POST   /_emulator/seed                   a seed file {"<table>":[rows]}: load existing rows (see LoadSeed)
//	POST   /_emulator/base-currency          {"isoCurrencyCode":"EUR","currencyName":"Euro","currencySymbol":"€"}:
//	                                         provision another base currency (USD by default)
//	POST   /_emulator/apps/{clientId}/restrict  restrict the app from the Dataverse API (every request answers 403
//	                                         0x80095ffc); .../unrestrict lifts it
//
// Durations are Go duration strings ("250ms", "5m").
func (e *Emulator) adminRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /_emulator/limits", func(w http.ResponseWriter, r *http.Request) {
		var l Limits
		if !decodeAdmin(w, r, &l) {
			return
		}
		e.SetLimits(l)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /_emulator/apps", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ ClientID, ClientSecret string }
		if !decodeAdmin(w, r, &req) {
			return
		}
		app, created, err := e.RegisterApp(req.ClientID, req.ClientSecret)
		if err != nil {
			status := http.StatusBadRequest
			if errors.Is(err, ErrAppRegistered) {
				status = http.StatusConflict
			}
			adminError(w, status, err)
			return
		}
		status := http.StatusOK
		if created {
			status = http.StatusCreated
		}
		writeJSON(w, status, map[string]string{"clientId": app.ClientID, "userId": app.UserID.String()})
	})
	mux.HandleFunc("POST /_emulator/latency", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ PerRequest, PerRecord duration }
		if !decodeAdmin(w, r, &req) {
			return
		}
		e.SetLatency(Latency{PerRequest: time.Duration(req.PerRequest), PerRecord: time.Duration(req.PerRecord)})
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /_emulator/faults", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Kind          string
			Status, Count int
			Delay, For    duration
		}
		if !decodeAdmin(w, r, &req) {
			return
		}
		if err := e.InjectFault(Fault{Kind: req.Kind, Status: req.Status, Count: req.Count, Delay: time.Duration(req.Delay), For: time.Duration(req.For)}); err != nil {
			adminError(w, http.StatusBadRequest, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /_emulator/definitions", func(w http.ResponseWriter, r *http.Request) {
		data, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
		if err == nil {
			err = e.LoadDefinitions(data)
		}
		if err != nil {
			adminError(w, http.StatusBadRequest, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	e.environmentRoutes(mux)
	e.tokenRoutes(mux)
	mux.HandleFunc("POST /_emulator/tokens/revoke", func(w http.ResponseWriter, _ *http.Request) {
		e.RevokeTokens()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("DELETE /_emulator/faults", func(w http.ResponseWriter, _ *http.Request) {
		e.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /_emulator/rows/{set}", func(w http.ResponseWriter, r *http.Request) {
		rows, err := e.Rows(r.PathValue("set"))
		if err != nil {
			adminError(w, http.StatusNotFound, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"value": rows})
	})
	mux.HandleFunc("DELETE /_emulator/rows/{set}/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := uuid.Parse(r.PathValue("id"))
		if err == nil {
			err = e.DeleteRow(r.PathValue("set"), id)
		}
		if err != nil {
			adminError(w, http.StatusNotFound, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("PATCH /_emulator/rows/{set}/{id}", func(w http.ResponseWriter, r *http.Request) {
		var values map[string]any
		id, err := uuid.Parse(r.PathValue("id"))
		if err == nil {
			err = json.NewDecoder(r.Body).Decode(&values)
		}
		if err == nil {
			err = e.ChangeRow(r.PathValue("set"), id, values)
		}
		if err != nil {
			adminError(w, http.StatusBadRequest, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	for action, assigned := range map[string]bool{"assign-role": true, "unassign-role": false} {
		mux.HandleFunc("POST /_emulator/users/{id}/"+action, func(w http.ResponseWriter, r *http.Request) {
			id, err := uuid.Parse(r.PathValue("id"))
			if err == nil {
				err = e.SetRoleAssigned(id, assigned)
			}
			if err != nil {
				adminError(w, http.StatusNotFound, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		})
	}
	mux.HandleFunc("POST /_emulator/privileges", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			User   string   `json:"user"`
			Grant  []string `json:"grant"`
			Revoke []string `json:"revoke"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			adminError(w, http.StatusBadRequest, err)
			return
		}
		user := DefaultApp.UserID
		if req.User != "" {
			var err error
			if user, err = uuid.Parse(req.User); err != nil {
				adminError(w, http.StatusBadRequest, err)
				return
			}
		}
		for _, p := range req.Grant {
			if err := e.SetPrivilege(user, p, true); err != nil {
				adminError(w, http.StatusBadRequest, err)
				return
			}
		}
		for _, p := range req.Revoke {
			if err := e.SetPrivilege(user, p, false); err != nil {
				adminError(w, http.StatusBadRequest, err)
				return
			}
		}
		w.WriteHeader(http.StatusNoContent)
	})
	for action, disabled := range map[string]bool{"disable": true, "enable": false} {
		mux.HandleFunc("POST /_emulator/users/{id}/"+action, func(w http.ResponseWriter, r *http.Request) {
			id, err := uuid.Parse(r.PathValue("id"))
			if err == nil {
				err = e.DisableUser(id, disabled)
			}
			if err != nil {
				adminError(w, http.StatusNotFound, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		})
	}
	mux.HandleFunc("GET /_emulator/stats", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, e.Stats())
	})
	mux.HandleFunc("POST /_emulator/reset", func(w http.ResponseWriter, _ *http.Request) {
		e.Reset()
		w.WriteHeader(http.StatusNoContent)
	})
}

func adminError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

// duration is a Go duration string in JSON.
type duration time.Duration

func (d duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string such as \"250ms\": %w", err)
	}
	v, err := time.ParseDuration(s)
	*d = duration(v)
	return err
}

func decodeAdmin(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		adminError(w, http.StatusBadRequest, err)
		return false
	}
	return true
}
