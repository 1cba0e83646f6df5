package emulator_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/uuid"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/dvsync/dvsync/infra/emulator"
)

// What one emulator saved, another loads as it was: rows with their values' types, and a revoked
// privilege. A write after loading gets a version newer than every loaded row's.
func TestSavedStateLoadsAsItWas(t *testing.T) {
	before := emulator.New()
	srv := httptest.NewServer(before.Handler())
	cfg := clientcredentials.Config{ClientID: emulator.DefaultApp.ClientID, ClientSecret: emulator.DefaultApp.ClientSecret,
		TokenURL: srv.URL + "/" + emulator.DefaultTenant + "/oauth2/v2.0/token"}
	api := cfg.Client(context.Background())
	resp, err := api.Post(srv.URL+"/api/data/v9.2/accounts", "application/json", strings.NewReader(`{"name":"Adatum","accountnumber":"C10000"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	srv.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("create: %d", resp.StatusCode)
	}
	if err := before.SetPrivilege(emulator.DefaultApp.UserID, "prvCreateProduct", false); err != nil {
		t.Fatal(err)
	}
	rows, _ := before.Rows("accounts")
	if len(rows) != 1 {
		t.Fatalf("%d accounts", len(rows))
	}
	id := uuid.MustParse(rows[0]["accountid"].(string))
	path := filepath.Join(t.TempDir(), "emulator.state")
	if err := before.SaveFile(path); err != nil {
		t.Fatal(err)
	}

	after := emulator.New()
	if err := after.LoadFile(path); err != nil {
		t.Fatal(err)
	}
	if got, want := after.Row("accounts", id), before.Row("accounts", id); got == nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("loaded row %#v, want %#v", got, want)
	}
	srv = httptest.NewServer(after.Handler())
	defer srv.Close()
	cfg.TokenURL = srv.URL + "/" + emulator.DefaultTenant + "/oauth2/v2.0/token"
	api = cfg.Client(context.Background())
	resp, err = api.Post(srv.URL+"/api/data/v9.2/products", "application/json", strings.NewReader(`{"name":"Bicycle"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("creating a product after loading: %d, want 403 (the privilege stays revoked)", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPatch, srv.URL+"/api/data/v9.2/accounts("+id.String()+")", strings.NewReader(`{"name":"Adatum Corp"}`))
	req.Header.Set("Content-Type", "application/json")
	if resp, err = api.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if v1, v2 := before.Row("accounts", id)["versionnumber"].(int64), after.Row("accounts", id)["versionnumber"].(int64); v2 <= v1 {
		t.Fatalf("version after an update of a loaded row: %d, want more than %d", v2, v1)
	}
	if err := emulator.New().LoadFile(filepath.Join(t.TempDir(), "none")); err != nil {
		t.Fatalf("a missing file: %v, want a fresh environment", err)
	}
}
