package emulator_test

import (
	"bytes"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// ids is the sorted primary ids of a GET's rows.
func ids(out map[string]any, primary string) []string {
	got := []string{}
	for _, v := range out["value"].([]any) {
		got = append(got, v.(map[string]any)[primary].(string))
	}
	slices.Sort(got)
	return got
}

// An equality $filter answered from the index gives exactly the rows a scan of every row gives:
// text without regard to case, lookups by their _x_value column, and/or of such terms; other
// filters are scanned. The index follows creates, updates, deletes, a rolled-back change set and
// Load.
func TestEqualityFiltersAnswerAsTheScan(t *testing.T) {
	a := newAPI(t)
	eur := a.expect(201, "", "POST", "transactioncurrencies", `{"isocurrencycode":"EUR","currencyname":"Euro","currencysymbol":"€"}`,
		"Prefer", "return=representation")["transactioncurrencyid"].(string)
	var accounts []string
	for _, body := range []string{
		`{"name":"Adatum","accountnumber":"A1","address1_city":"Oslo"}`,
		`{"name":"ADATUM","accountnumber":"a2","address1_city":"oslo","transactioncurrencyid@odata.bind":"/transactioncurrencies(` + eur + `)"}`,
		`{"name":"Fabrikam","accountnumber":"F1","transactioncurrencyid@odata.bind":"/transactioncurrencies(` + eur + `)"}`,
		`{"name":"Contoso","creditlimit":100}`,
		`{"name":"O'Neil & Co","accountnumber":"Q1"}`,
	} {
		out := a.expect(201, "", "POST", "accounts", body, "Prefer", "return=representation")
		accounts = append(accounts, out["accountid"].(string))
	}
	filters := []struct {
		expr    string
		indexed bool
	}{
		{"name eq 'adatum'", true},
		{"name eq 'Nobody'", true},
		{"accountnumber eq 'A2'", true},
		{"name eq 'Adatum' and accountnumber eq 'A1'", true},
		{"name eq 'Adatum' and address1_city eq 'OSLO'", true},
		{"(name eq 'Adatum' and accountnumber eq 'a1') or (name eq 'fabrikam' and accountnumber eq 'F1')", true},
		{"name eq 'O''Neil & Co'", true},
		{"_transactioncurrencyid_value eq " + eur, true},
		{"_transactioncurrencyid_value eq " + strings.ToUpper(eur) + " and name eq 'adatum'", true},
		{"accountid eq " + accounts[3], true},
		{"name eq 'Adatum' and creditlimit gt 10", true}, // narrowed by its eq side
		{"name eq 'Adatum' or creditlimit eq 100", false},
		{"creditlimit eq 100", false},
		{"accountnumber eq null", false},
		{"name ne 'Adatum'", false},
		{"not (name eq 'Adatum')", false},
		{"startswith(name,'ada')", false},
	}
	check := func(when string) {
		t.Helper()
		for _, f := range filters {
			want, err := a.emu.ScanFilter("accounts", f.expr)
			if err != nil {
				t.Fatal(err)
			}
			out := a.expect(200, "", "GET", "accounts?$select=name&$filter="+url.QueryEscape(f.expr), "")
			if got := ids(out, "accountid"); !slices.Equal(got, want) {
				t.Errorf("%s: %s answers %v, a scan %v", when, f.expr, got, want)
			}
			if got := a.emu.Indexed("accounts", f.expr); got != f.indexed {
				t.Errorf("%s: %s answered from the index: %v, want %v", when, f.expr, got, f.indexed)
			}
		}
		a.checkIndexes()
	}
	check("after creates")
	if want, _ := a.emu.ScanFilter("accounts", "name eq 'adatum'"); len(want) != 2 {
		t.Fatalf("the scan itself: %v", want) // the test means something only if case is ignored
	}

	// An update moves a row from one value to another; a delete removes it.
	a.expect(204, "", "PATCH", "accounts("+accounts[0]+")", `{"name":"Renamed","accountnumber":"A9"}`)
	a.expect(204, "", "PATCH", "accounts("+accounts[2]+")", `{"transactioncurrencyid@odata.bind":null}`)
	a.expect(204, "", "DELETE", "accounts("+accounts[1]+")", "")
	check("after an update and a delete")

	// A change set that fails leaves the index as the rows: as before it.
	body, ct := batch([]string{
		"PATCH accounts(" + accounts[3] + ") HTTP/1.1\nContent-Type: application/json\n\n{\"name\":\"Adatum\"}",
		"POST accounts HTTP/1.1\nContent-Type: application/json\n\n{\"nosuch\":1}",
	})
	if resp, _ := a.batch(body, ct); resp.StatusCode != 400 {
		t.Fatalf("the failing change set: %d", resp.StatusCode)
	}
	check("after a rolled-back change set")

	// Rows loaded from a snapshot are found through the index of a running emulator.
	var snap bytes.Buffer
	if err := a.emu.Save(&snap); err != nil {
		t.Fatal(err)
	}
	b := newAPI(t)
	b.expect(200, "", "GET", "accounts?$filter="+url.QueryEscape("name eq 'Contoso'"), "") // builds the index first
	if err := b.emu.Load(&snap); err != nil {
		t.Fatal(err)
	}
	if got := ids(b.expect(200, "", "GET", "accounts?$filter="+url.QueryEscape("name eq 'Contoso'"), ""), "accountid"); !slices.Equal(got, []string{accounts[3]}) {
		t.Fatalf("after Load: %v, want %v", got, accounts[3:4])
	}
	a = b
	check("after Load")
}
