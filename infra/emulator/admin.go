package emulator

import (
	"encoding/json"
	"net/http"

	"github.com/google/uuid"
)

// adminRoutes serves /_emulator/: what a Dataverse administrator or user would do behind
// dvsync's back, for tests and demos. It is not part of the Dataverse API and needs no token.
//
//	GET    /_emulator/rows/{set}             every row of an entity set
//	DELETE /_emulator/rows/{set}/{id}        delete a row
//	POST   /_emulator/privileges             {"user":"<id>","grant":["prv..."],"revoke":["prv..."]}
//	POST   /_emulator/users/{id}/disable     disable an application user (enable: .../enable)
//	POST   /_emulator/reset                  drop all rows and restore the defaults
func (e *Emulator) adminRoutes(mux *http.ServeMux) {
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
	mux.HandleFunc("POST /_emulator/reset", func(w http.ResponseWriter, _ *http.Request) {
		e.Reset()
		w.WriteHeader(http.StatusNoContent)
	})
}

func adminError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error()})
}
