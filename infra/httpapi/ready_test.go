package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

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

// A check that hangs until the deadline does not use up the others' time: they run at once.
func TestAHangingCheckLeavesTheOthersTheirTime(t *testing.T) {
	hang := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	slowOK := func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
			return nil
		}
	}
	s := &Server{Metrics: telemetry.New(nil), Ready: map[string]Check{"a": hang, "b": slowOK, "c": hang, "d": slowOK}}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Checks map[string]string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a": "unavailable", "b": "ok", "c": "unavailable", "d": "ok"}
	if resp.StatusCode != 503 || !maps.Equal(body.Checks, want) {
		t.Fatalf("readyz: %d %v, want 503 %v", resp.StatusCode, body.Checks, want)
	}
}
