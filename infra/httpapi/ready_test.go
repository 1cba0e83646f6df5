package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/dvsync/dvsync/infra/telemetry"
)

// /healthz and /readyz each answer for their own checks: a process can be alive and not ready.
func TestReadyzAsksItsOwnChecks(t *testing.T) {
	ok := func(context.Context) error { return nil }
	down := func(context.Context) error { return errors.New("no quorum") }
	s := &Server{Metrics: telemetry.New(nil), Checks: map[string]Check{"nats": ok},
		Ready: map[string]Check{"nats": ok, "jetstream": down}}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	for path, want := range map[string]struct {
		status int
		checks map[string]string
	}{
		"/healthz": {200, map[string]string{"nats": "ok"}},
		"/readyz":  {503, map[string]string{"nats": "ok", "jetstream": "unavailable"}},
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Status string
			Checks map[string]string
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != want.status || len(body.Checks) != len(want.checks) {
			t.Fatalf("GET %s: %d %+v (%v); want %d %v", path, resp.StatusCode, body, err, want.status, want.checks)
		}
		for name, v := range want.checks {
			if body.Checks[name] != v {
				t.Errorf("GET %s: check %s = %q, want %q", path, name, body.Checks[name], v)
			}
		}
	}
}
