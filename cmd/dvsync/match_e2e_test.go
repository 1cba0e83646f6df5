package main

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/consumers/replay"
	"github.com/dvsync/dvsync/domain"
)

// existing creates a row in the emulator as a Dataverse user would have before dvsync came.
func (h *harness) existing(set string, attrs domain.Attributes) uuid.UUID {
	h.t.Helper()
	id, err := h.workers[0].dvUsers[0].Client.Create(context.Background(), set, attrs)
	if err != nil {
		h.t.Fatal(err)
	}
	return id
}

// A currency that exists in Dataverse (as an environment's base currency does) is coupled to the
// record by its ISO code and updated, not created a second time; an account that exists is
// coupled by its number.
func TestExistingRowsAreCoupledByMatchNotDuplicated(t *testing.T) {
	h := start(t, 1)
	cur, cust := h.key("U"), h.key("C10000")
	base := h.existing("transactioncurrencies", domain.Attributes{"isocurrencycode": isoCode(cur), "currencyname": "Base",
		"currencysymbol": "$", "exchangerate": 1})
	account := h.existing("accounts", domain.Attributes{"accountnumber": cust, "name": "Adatum (typed in Dataverse)"})
	currencies, accounts := h.rowCount("transactioncurrencies"), h.rowCount("accounts")

	h.publish("currency", cur, 1, map[string]any{"code": strings.ToLower(isoCode(cur)), "displayName": "US Dollar", "symbol": "$"})
	if c := h.waitCoupled("currency", cur, 1); c.RowID != base {
		t.Fatalf("currency coupled to %s, want the existing %s", c.RowID, base)
	}
	h.publish("customer", cust, 1, map[string]any{"number": cust, "displayName": "Adatum Corporation", "currencyCode": cur})
	if c := h.waitCoupled("customer", cust, 1); c.RowID != account {
		t.Fatalf("customer coupled to %s, want the existing account %s", c.RowID, account)
	}
	if n, m := h.rowCount("transactioncurrencies"), h.rowCount("accounts"); n != currencies || m != accounts {
		t.Fatalf("%d currencies and %d accounts, want %d and %d: matched rows are not created again", n, m, currencies, accounts)
	}
	if row := h.row("accounts", account); row["name"] != "Adatum Corporation" || row["_transactioncurrencyid_value"] != base.String() {
		t.Fatalf("account = %v; want it synchronized after coupling", row)
	}
	if row := h.row("transactioncurrencies", base); row["currencyname"] != "US Dollar" {
		t.Fatalf("currency = %v; want it synchronized after coupling", row)
	}
}

// matchByName is a mappings file that couples customers to accounts by name (the emulator, like
// many environments, keeps account numbers unique, so only a match on another field can be
// ambiguous).
func matchByName(t *testing.T, extra string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mappings.yaml")
	if err := os.WriteFile(p, []byte(`mappings:
  - table: customer
    entity: account
    entitySet: accounts
    primaryId: accountid
    primaryName: name
`+extra+`    fields:
      - {source: number, attribute: accountnumber, type: string}
      - {source: displayName, attribute: name, type: string, match: {priority: 0}}
      - {source: city, attribute: address1_city, type: string}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAmbiguousAndTakenMatchesAreCouplingErrors(t *testing.T) {
	mappings := matchByName(t, "")
	h := startWith(t, options{workers: 1, tweak: func(c *Config) { c.MappingsFile = mappings }})
	twin, first, second := h.key("C20000"), h.key("C30000"), h.key("C30001")
	a := h.existing("accounts", domain.Attributes{"accountnumber": "A1", "name": "Trey Research"})
	b := h.existing("accounts", domain.Attributes{"accountnumber": "A2", "name": "trey research"})
	taken := h.existing("accounts", domain.Attributes{"accountnumber": "A3", "name": "Fabrikam"})

	h.publish("customer", twin, 1, map[string]any{"number": twin, "displayName": "Trey Research"})
	e := h.waitError("customer", twin, domain.KindMultipleMatches)
	if e.Class != domain.ClassCoupling || !strings.Contains(e.Details["candidates"], a.String()) || !strings.Contains(e.Details["candidates"], b.String()) ||
		!strings.Contains(e.Message, a.String()+" (Trey Research)") || !strings.Contains(e.Message, b.String()+" (trey research)") {
		t.Fatalf("error = %+v; want both candidates named", e)
	}
	h.publish("customer", first, 1, map[string]any{"number": first, "displayName": "Fabrikam"})
	if c := h.waitCoupled("customer", first, 1); c.RowID != taken {
		t.Fatalf("coupled to %s, want %s", c.RowID, taken)
	}
	// Another record whose name matches the same account: the account is taken.
	h.publish("customer", second, 1, map[string]any{"number": second, "displayName": "Fabrikam"})
	e = h.waitError("customer", second, domain.KindAlreadyCoupled)
	if e.Details["coupled_key"] != first || !strings.Contains(e.Message, "because the account record is already coupled to customer/"+first) {
		t.Fatalf("error = %+v", e)
	}
	if n := h.rowCount("accounts"); n != 3 {
		t.Fatalf("%d accounts; a failed match creates none", n)
	}

	// The coupling run: once the duplicate is gone, the ambiguous record couples; the taken one
	// fails again.
	if err := h.emu.DeleteRow("accounts", b); err != nil {
		t.Fatal(err)
	}
	base := h.api()
	var run replay.CouplingRun
	if code := call(t, "POST", base+"/api/v1/couplings/customer/match?wait=20s", testViewerToken, nil, nil); code != 403 {
		t.Fatalf("a viewer's coupling run: %d, want 403", code)
	}
	if code := call(t, "POST", base+"/api/v1/couplings/customer/match?wait=20s", testOperatorToken, nil, &run); code != 200 {
		t.Fatalf("coupling run: %d", code)
	}
	// The database is the package's: other tests' records may be in the run too.
	outcomes := map[string]string{}
	for _, r := range run.Results {
		outcomes[r.Key] = r.Outcome
	}
	if outcomes[twin] != "coupled" || outcomes[second] != "failed" || run.Coupled < 1 || run.Failed < 1 || run.Pending != 0 ||
		run.Records != run.Coupled+run.Created+run.Failed+run.Skipped {
		t.Fatalf("run = %+v; want the twin coupled and the taken match failed", run)
	}
	if c := h.coupling("customer", twin); c.RowID != a {
		t.Fatalf("twin coupled to %s, want %s", c.RowID, a)
	}
}

func TestNoMatchWithCreateOffIsACouplingErrorUntilTheRowExists(t *testing.T) {
	mappings := matchByName(t, "    createNewIfNoMatch: false\n")
	h := startWith(t, options{workers: 1, tweak: func(c *Config) { c.MappingsFile = mappings }})
	cust := h.key("C40000")
	h.publish("customer", cust, 1, map[string]any{"number": cust, "displayName": "Litware"})
	e := h.waitError("customer", cust, domain.KindNoMatch)
	if e.Class != domain.ClassCoupling || !strings.Contains(e.Message, "name = Litware") {
		t.Fatalf("error = %+v", e)
	}
	if n := h.rowCount("accounts"); n != 0 {
		t.Fatalf("%d accounts; create is off", n)
	}
	// On the page: an operator's "Couple by match" on the customer table couples a record whose
	// account was created in Dataverse since; a viewer has no such button.
	base := h.api()
	other := h.key("C40001")
	h.publish("customer", other, 1, map[string]any{"number": other, "displayName": "Northwind"})
	h.waitError("customer", other, domain.KindNoMatch)
	otherRow := h.existing("accounts", domain.Attributes{"accountnumber": "A5", "name": "Northwind"})
	if page := get(t, signIn(t, base, testViewerToken), base+"/couplings?table=customer", 200); strings.Contains(page, "Couple by match") {
		t.Fatal("a viewer sees the Couple by match button")
	}
	operator := signIn(t, base, testOperatorToken)
	page := get(t, operator, base+"/couplings?table=customer", 200)
	csrf := regexp.MustCompile(`action="/couplings/match"><input type="hidden" name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
	if csrf == nil {
		t.Fatalf("no Couple by match form on the page:\n%s", page)
	}
	req, _ := http.NewRequest("POST", base+"/couplings/match", strings.NewReader(url.Values{"csrf": {csrf[1]}, "table": {"customer"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	resp, err := operator.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The button starts the run in the background and returns at once; the run's counts come
	// with its row on the page when it ends (h-progress).
	if resp.StatusCode != 200 || resp.Request.URL.Path != "/couplings" || !strings.Contains(string(body), "Coupling run started") {
		t.Fatalf("after Couple by match: %d at %s:\n%s", resp.StatusCode, resp.Request.URL, body)
	}
	finished := regexp.MustCompile(`<td data-state="run:customer">finished</td>\s*<td[^>]*>.*</td>\s*<td data-counts="run:customer">[1-9]\d* coupled, \d+ created, [1-9]\d* failed`)
	h.eventually("the page's coupling run to finish with its counts", func() bool {
		return finished.MatchString(get(t, operator, base+"/couplings?table=customer", 200))
	})
	if c := h.coupling("customer", other); c.RowID != otherRow {
		t.Fatalf("coupling of %s = %+v, want %s", other, c, otherRow)
	}

	// Someone creates the other account in Dataverse; the CLI's coupling run couples the record.
	row := h.existing("accounts", domain.Attributes{"accountnumber": "A4", "name": "LITWARE"})
	t.Setenv("DVSYNC_TOKEN", testOperatorToken)
	var out, errOut strings.Builder
	if code := run(context.Background(), []string{"couple", "--table", "customer", "--server", base}, &out, &errOut); code != 0 {
		t.Fatalf("dvsync couple: exit %d: %s", code, errOut.String())
	}
	if !regexp.MustCompile(`(?m)^`+cust+` +coupled +`+row.String()).MatchString(out.String()) ||
		!regexp.MustCompile(`(?m)^customer: \d+ records: [1-9]\d* coupled, \d+ created, \d+ failed`).MatchString(out.String()) {
		t.Fatalf("dvsync couple printed:\n%s", out.String())
	}
	if c := h.coupling("customer", cust); c.RowID != row || !c.Coupled() {
		t.Fatalf("coupling = %+v, want %s", c, row)
	}
	if got := h.row("accounts", row); got["name"] != "Litware" || got["accountnumber"] != cust {
		t.Fatalf("name = %v; want it synchronized after coupling", got)
	}
}
