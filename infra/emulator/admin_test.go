package emulator_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/dvsync/dvsync/infra/emulator"
)

// The README's curl examples, as requests.
func TestAdminAPI(t *testing.T) {
	emu := emulator.New()
	srv := httptest.NewServer(emu.Handler())
	defer srv.Close()
	do := func(method, path, body string) int {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	cfg := clientcredentials.Config{ClientID: emulator.DefaultApp.ClientID, ClientSecret: emulator.DefaultApp.ClientSecret,
		TokenURL: srv.URL + "/" + emulator.DefaultTenant + "/oauth2/v2.0/token"}
	api := cfg.Client(context.Background())
	create := func() int {
		resp, err := api.Post(srv.URL+"/api/data/v9.2/products", "application/json", strings.NewReader(`{"name":"Bicycle"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := do("POST", "/_emulator/privileges", `{"revoke":["prvCreateProduct"]}`); code != 204 {
		t.Fatalf("revoke: %d", code)
	}
	if code := create(); code != 403 {
		t.Fatalf("create without the privilege: %d, want 403", code)
	}
	do("POST", "/_emulator/privileges", `{"grant":["prvCreateProduct"]}`)
	if code := create(); code != 204 {
		t.Fatalf("create with the privilege granted again: %d, want 204", code)
	}
	rows, _ := emu.Rows("products")
	if len(rows) != 1 {
		t.Fatalf("%d products", len(rows))
	}
	id := rows[0]["productid"].(string)
	if code := do("DELETE", "/_emulator/rows/products/"+id, ""); code != 204 || emu.Row("products", uuid.MustParse(id)) != nil {
		t.Fatalf("delete row: %d", code)
	}
	if code := do("POST", "/_emulator/users/"+emulator.DefaultApp.UserID.String()+"/disable", ""); code != 204 {
		t.Fatalf("disable: %d", code)
	}
	if code := create(); code != 403 {
		t.Fatalf("create by a disabled user: %d, want 403", code)
	}
	if code := do("POST", "/_emulator/reset", ""); code != 204 {
		t.Fatalf("reset: %d", code)
	}
	if code := do("GET", "/_emulator/rows/nosuchset", ""); code != 404 {
		t.Fatalf("rows of an unknown set: %d", code)
	}
}
