package emulator_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dvsync/dvsync/infra/emulator"
)

// admin calls an /_emulator/ route and returns the status and the raw answer.
func (a *api) admin(method, path, body string) (int, []byte) {
	a.t.Helper()
	req, _ := http.NewRequest(method, a.srv.URL+path, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

func TestAdminRegistersMoreApplicationUsers(t *testing.T) {
	a := newAPI(t)
	second := emulator.App{ClientID: "5d2c7e4a-0b1f-4c8e-9a3d-7f6e5b4a3c21", ClientSecret: "second-secret"}
	status, raw := a.admin("POST", "/_emulator/apps", `{"clientId":"`+second.ClientID+`","clientSecret":"second-secret"}`)
	var reg struct{ ClientID, UserID string }
	if err := json.Unmarshal(raw, &reg); status != 201 || err != nil || reg.ClientID != second.ClientID || reg.UserID == "" {
		t.Fatalf("register: %d %s", status, raw)
	}
	if strings.Contains(string(raw), "second-secret") {
		t.Fatalf("the answer shows the secret: %s", raw)
	}
	if status, again := a.admin("POST", "/_emulator/apps", `{"clientId":"`+second.ClientID+`","clientSecret":"second-secret"}`); status != 200 || string(again) != string(raw) {
		t.Fatalf("registering the same app again: %d %s, want 200 %s", status, again, raw)
	}
	if status, _ := a.admin("POST", "/_emulator/apps", `{"clientId":"`+second.ClientID+`","clientSecret":"other"}`); status != 409 {
		t.Fatalf("the same client id with another secret: %d, want 409", status)
	}
	if status, _ := a.admin("POST", "/_emulator/apps", `{"clientId":"x"}`); status != 400 {
		t.Fatalf("an app without a secret: %d, want 400", status)
	}

	// The new user signs in and holds every privilege, on tables loaded later too.
	b := &api{t: t, srv: a.srv, emu: a.emu, c: a.clientOf(second)}
	b.expect(204, "", "POST", "accounts", `{"name":"Written by the second user"}`)
	if err := a.emu.LoadDefinitions([]byte(customTable)); err != nil {
		t.Fatal(err)
	}
	b.expect(204, "", "POST", "new_projects", `{"new_name":"Loaded later"}`)
	if err := a.emu.SetPrivilege(mustUUID(t, reg.UserID), "prvCreateAccount", false); err != nil {
		t.Fatal(err)
	}
	if out := b.expect(403, "0x80040220", "POST", "accounts", `{"name":"Denied"}`); !strings.Contains(out["error"].(map[string]any)["message"].(string), reg.UserID) {
		t.Fatalf("the privilege error names another user: %v", out)
	}
	a.expect(204, "", "POST", "accounts", `{"name":"The default user still may"}`)

	// A reset forgets the apps it added.
	a.emu.Reset()
	if _, err := a.clientOf(second).Get(a.srv.URL + "/api/data/v9.2/accounts"); err == nil || !strings.Contains(err.Error(), "unauthorized_client") {
		t.Fatalf("the second app signed in after a reset: %v", err)
	}
}

func TestEachUserHasItsOwnLimitsAndStats(t *testing.T) {
	a := newAPI(t)
	second, _, err := a.emu.RegisterApp("0f9e8d7c-6b5a-4c3d-2e1f-0a9b8c7d6e5f", "second-secret")
	if err != nil {
		t.Fatal(err)
	}
	b := &api{t: t, srv: a.srv, emu: a.emu, c: a.clientOf(second)}
	if status, _ := a.admin("POST", "/_emulator/limits", `{"window":"1m","requests":2}`); status != 204 {
		t.Fatalf("limits: %d", status)
	}
	a.emu.SetLatency(emulator.Latency{PerRequest: 3 * time.Millisecond, PerRecord: time.Millisecond})
	a.expect(204, "", "POST", "accounts", `{"name":"One"}`)
	a.expect(200, "", "GET", "accounts", "")
	a.expect(429, "0x80072322", "GET", "accounts", "")
	a.expect(429, "0x80072322", "GET", "accounts", "")
	// The first user's budget is spent; the second's is whole.
	b.expect(200, "", "POST", "accounts/Microsoft.Dynamics.CRM.CreateMultiple",
		`{"Targets":[{"@odata.type":"Microsoft.Dynamics.CRM.account","name":"Two"},{"@odata.type":"Microsoft.Dynamics.CRM.account","name":"Three"}]}`)

	status, raw := a.admin("GET", "/_emulator/stats", "")
	if status != 200 || strings.Contains(string(raw), "secret") {
		t.Fatalf("stats: %d %s", status, raw)
	}
	var stats struct {
		InFlight *int64 `json:"inFlight"`
		Users    map[string]struct {
			UserID          string           `json:"userId"`
			Requests        int64            `json:"requests"`
			Records         int64            `json:"records"`
			ExecutionTimeMs float64          `json:"executionTimeMs"`
			Throttled       map[string]int64 `json:"throttled"`
			Limits          map[string]any   `json:"limits"`
		} `json:"users"`
	}
	if err := json.Unmarshal(raw, &stats); err != nil || stats.InFlight == nil || len(stats.Users) != 2 {
		t.Fatalf("stats: %v %s", err, raw)
	}
	first, other := stats.Users[emulator.DefaultApp.ClientID], stats.Users[second.ClientID]
	if first.UserID != emulator.DefaultApp.UserID.String() || first.Requests != 2 || first.Records != 2 ||
		first.Throttled["0x80072322"] != 2 || first.ExecutionTimeMs < 2*4 {
		t.Errorf("the first user's stats: %+v", first)
	}
	if other.UserID != second.UserID.String() || other.Requests != 1 || other.Records != 2 || len(other.Throttled) != 0 || other.ExecutionTimeMs < 5 {
		t.Errorf("the second user's stats: %+v", other)
	}
	want := map[string]any{"window": "1m0s", "requests": 2.0, "executionTime": "20m0s", "concurrent": 52.0, "dopHint": 4.0}
	for k, v := range want {
		if first.Limits[k] != v || other.Limits[k] != v {
			t.Errorf("limits %s: %v and %v, want %v", k, first.Limits[k], other.Limits[k], v)
		}
	}
	// The limits read back are the form the limits route takes.
	limits, _ := json.Marshal(first.Limits)
	if status, _ := a.admin("POST", "/_emulator/limits", string(limits)); status != 204 {
		t.Fatalf("posting the limits the stats show: %d", status)
	}

	a.emu.Reset()
	if s := a.emu.Stats().Users[emulator.DefaultApp.ClientID]; s.Requests != 0 || len(s.Throttled) != 0 || s.Limits != emulator.DefaultLimits {
		t.Errorf("stats after a reset: %+v", s)
	}
}
