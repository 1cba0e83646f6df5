package emulator

import (
	"errors"
	"net/http"
	"time"
)

// tokenRoutes serves the admin endpoints of the emulated Entra ID's tokens (see adminRoutes).
//
//	POST /_emulator/tokens/lifetime  {"lifetime":"2s"}: the lifetime of tokens issued from now on
//	                                 (an hour by default); a request with an expired token answers
//	                                 401 as Dataverse does
func (e *Emulator) tokenRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /_emulator/tokens/lifetime", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Lifetime duration }
		if !decodeAdmin(w, r, &req) {
			return
		}
		if req.Lifetime <= 0 {
			adminError(w, http.StatusBadRequest, errors.New(`emulator: a token lifetime is a positive duration such as "2s"`))
			return
		}
		e.SetTokenLifetime(time.Duration(req.Lifetime))
		w.WriteHeader(http.StatusNoContent)
	})
}
