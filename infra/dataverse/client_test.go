package dataverse_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/dataverse"
	"github.com/dvsync/dvsync/infra/emulator"
)

func newClient(t *testing.T) (*dataverse.Client, *emulator.Emulator) {
	t.Helper()
	emu := emulator.New()
	srv := httptest.NewServer(emu.Handler())
	t.Cleanup(srv.Close)
	creds := dataverse.ClientCredentials{TokenURL: srv.URL + "/" + emulator.DefaultTenant + "/oauth2/v2.0/token",
		ClientID: emulator.DefaultApp.ClientID, ClientSecret: emulator.DefaultApp.ClientSecret}
	c, err := dataverse.NewClient(srv.URL, dataverse.WithTokenSource(creds.TokenSource(context.Background(), srv.URL)))
	if err != nil {
		t.Fatal(err)
	}
	return c, emu
}

func dvError(t *testing.T, err error) *domain.DataverseError {
	t.Helper()
	var dv *domain.DataverseError
	if !errors.As(err, &dv) {
		t.Fatalf("want a Dataverse error, got %v", err)
	}
	return dv
}

func TestCreateReadUpdateDelete(t *testing.T) {
	c, _ := newClient(t)
	ctx := context.Background()
	id, err := c.Create(ctx, "accounts", domain.Attributes{"name": "Adatum", "accountnumber": "C1"})
	if err != nil {
		t.Fatal(err)
	}
	row := domain.RowRef{EntitySet: "accounts", ID: id}
	if _, err := c.UpdateRow(ctx, row, domain.Attributes{"name": "Adatum Corp"}, domain.AnyVersion); err != nil {
		t.Fatal(err)
	}
	got, err := c.Row(ctx, row, "name")
	if err != nil || got["name"] != "Adatum Corp" || got["accountnumber"] != nil {
		t.Fatalf("row = %v, %v; want only name Adatum Corp (and the id)", got, err)
	}
	if err := c.DeleteRow(ctx, row, domain.AnyVersion); err != nil {
		t.Fatal(err)
	}
	_, err = c.UpdateRow(ctx, row, domain.Attributes{"name": "x"}, domain.AnyVersion)
	dv := dvError(t, err)
	if dv.Status != 404 || dv.Code != "0x80040217" || !strings.Contains(dv.Message, id.String()+" Does Not Exist") {
		t.Fatalf("update of a deleted row = %+v", dv)
	}
	if dv.MessageName() != "ObjectDoesNotExist" {
		t.Errorf("annotations were asked for; message name = %q", dv.MessageName())
	}
}

func TestConditionalWritesCarryAndCheckRowVersions(t *testing.T) {
	c, emu := newClient(t)
	ctx := context.Background()
	row := domain.RowRef{EntitySet: "accounts", ID: uuid.New(), IDAttribute: "accountid"}
	if _, found, err := c.RowVersion(ctx, row); err != nil || found {
		t.Fatalf("version of a missing row: found %v, %v", found, err)
	}
	v1, err := c.CreateRow(ctx, row, domain.Attributes{"name": "Adatum"})
	if err != nil || v1 == "" {
		t.Fatalf("create: %q, %v", v1, err)
	}
	if _, err := c.CreateRow(ctx, row, domain.Attributes{"name": "again"}); !domain.IsAlreadyExists(err) {
		t.Fatalf("second create = %v, want 412 0x80040237", err)
	}
	v2, err := c.UpdateRow(ctx, row, domain.Attributes{"name": "Adatum Corp"}, v1)
	if err != nil || v2 == v1 || v2 == "" {
		t.Fatalf("update on %s: %q, %v", v1, v2, err)
	}
	if got, found, err := c.RowVersion(ctx, row); err != nil || !found || got != v2 {
		t.Fatalf("row version %q %v %v, want %q", got, found, err, v2)
	}
	// A write conditioned on the old version (a late one, say) is refused and changes nothing.
	if _, err := c.UpdateRow(ctx, row, domain.Attributes{"name": "stale"}, v1); !domain.IsVersionMismatch(err) {
		t.Fatalf("update on a stale version = %v, want 412 0x80060882", err)
	}
	if err := c.DeleteRow(ctx, row, v1); !domain.IsVersionMismatch(err) {
		t.Fatalf("delete on a stale version = %v, want 412 0x80060882", err)
	}
	rows, _ := emu.Rows("accounts")
	if len(rows) != 1 || rows[0]["name"] != "Adatum Corp" {
		t.Fatalf("rows %v, want Adatum Corp alone", rows)
	}
	if err := c.DeleteRow(ctx, row, v2); err != nil {
		t.Fatal(err)
	}
}

func TestUpsertByAlternateKeyIsIdempotent(t *testing.T) {
	c, emu := newClient(t)
	ctx := context.Background()
	row := domain.RowRef{EntitySet: "accounts", ID: uuid.New()}
	if _, err := c.CreateRow(ctx, row, domain.Attributes{"name": "Fabrikam"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := c.UpsertByKey(ctx, "accounts", map[string]string{"accountnumber": "C2"}, domain.Attributes{"name": "Contoso"}); err != nil {
			t.Fatal(err)
		}
	}
	rows, _ := emu.Rows("accounts")
	if len(rows) != 2 {
		t.Fatalf("two upserts each of two rows left %d rows, want 2", len(rows))
	}
	id, found, err := c.FindRowID(ctx, "accounts", "accountid", "accountnumber eq 'C2'")
	if err != nil || !found || id == row.ID {
		t.Fatalf("FindRowID = %v %v %v", id, found, err)
	}
}

func TestErrorsCarryDataverseCodesAndMessages(t *testing.T) {
	c, emu := newClient(t)
	ctx := context.Background()
	missing := uuid.New()
	cases := []struct {
		name   string
		call   func() error
		status int
		code   string
		text   string
	}{
		{"unknown property", func() error {
			_, err := c.Create(ctx, "accounts", domain.Attributes{"nosuch": "x"})
			return err
		}, 400, "0x0", "Could not find a property named 'nosuch' on type 'Microsoft.Dynamics.CRM.account'."},
		{"bound row missing", func() error {
			_, err := c.Create(ctx, "accounts", domain.Attributes{"transactioncurrencyid@odata.bind": "/transactioncurrencies(" + missing.String() + ")"})
			return err
		}, 404, "0x80040217", "Entity 'transactioncurrency' With Id = " + missing.String() + " Does Not Exist"},
		{"string too long", func() error {
			_, err := c.Create(ctx, "accounts", domain.Attributes{"accountnumber": strings.Repeat("9", 21)})
			return err
		}, 400, "0x80044331", "A validation error occurred.  The length of the 'accountnumber' attribute of the 'account' entity exceeded the maximum allowed length of '20'."},
		{"missing privilege", func() error {
			if err := emu.SetPrivilege(emulator.DefaultApp.UserID, "prvCreateProduct", false); err != nil {
				t.Fatal(err)
			}
			_, err := c.Create(ctx, "products", domain.Attributes{"name": "Bicycle"})
			return err
		}, 403, "0x80040220", "is missing prvCreateProduct privilege"},
		{"unknown entity set", func() error {
			_, err := c.Query(ctx, "acounts", url.Values{})
			return err
		}, 404, "0x80060888", "Resource not found for the segment 'acounts'."},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dv := dvError(t, tc.call())
			if dv.Status != tc.status || dv.Code != tc.code || !strings.Contains(dv.Message, tc.text) {
				t.Fatalf("got %d %s %q; want %d %s containing %q", dv.Status, dv.Code, dv.Message, tc.status, tc.code, tc.text)
			}
			if dv.Request == "" || dv.Response == "" {
				t.Error("the error keeps no request or response for the call stack")
			}
		})
	}
}

func TestBadSecretIsAnAuthenticationError(t *testing.T) {
	emu := emulator.New()
	srv := httptest.NewServer(emu.Handler())
	defer srv.Close()
	var mu sync.Mutex
	var reasons []string
	creds := dataverse.ClientCredentials{TokenURL: srv.URL + "/" + emulator.DefaultTenant + "/oauth2/v2.0/token",
		ClientID: emulator.DefaultApp.ClientID, ClientSecret: "wrong-secret-value",
		OnFailure: func(reason string) { mu.Lock(); reasons = append(reasons, reason); mu.Unlock() }}
	c, _ := dataverse.NewClient(srv.URL, dataverse.WithTokenSource(creds.TokenSource(context.Background(), srv.URL)))
	_, err := c.Create(context.Background(), "accounts", domain.Attributes{"name": "x"})
	f := domain.ClassifyDataverse(err)
	if f == nil || f.Class != domain.ClassSetup || f.Kind != domain.KindAuthentication {
		t.Fatalf("bad secret classified as %+v (%v)", f, err)
	}
	mu.Lock()
	if len(reasons) != 1 || reasons[0] != dataverse.TokenRefused {
		t.Errorf("token failures reported: %v; want one %q", reasons, dataverse.TokenRefused)
	}
	mu.Unlock()
	if strings.Contains(err.Error(), "wrong-secret-value") {
		t.Fatal("the error shows the client secret")
	}
	if !strings.Contains(err.Error(), "AADSTS7000215") {
		t.Errorf("the error does not carry Entra ID's reason: %v", err)
	}
}

// A token endpoint that does not answer is a failure of its own kind: retried, not the secret.
func TestUnreachableTokenEndpointIsReportedAsUnavailable(t *testing.T) {
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	reasons := make(chan string, 4)
	creds := dataverse.ClientCredentials{TokenURL: gone.URL + "/token", ClientID: "app", ClientSecret: "s",
		OnFailure: func(reason string) { reasons <- reason }}
	c, _ := dataverse.NewClient(gone.URL, dataverse.WithTokenSource(creds.TokenSource(context.Background(), gone.URL)))
	if _, err := c.Query(context.Background(), "accounts", nil); err == nil {
		t.Fatal("a query without a token succeeded")
	}
	select {
	case r := <-reasons:
		if r != dataverse.TokenUnavailable {
			t.Fatalf("reason %q, want %q", r, dataverse.TokenUnavailable)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the failed token request was not reported")
	}
}

func TestNoTokenGets401WithChallenge(t *testing.T) {
	emu := emulator.New()
	srv := httptest.NewServer(emu.Handler())
	defer srv.Close()
	c, _ := dataverse.NewClient(srv.URL)
	_, err := c.Query(context.Background(), "accounts", nil)
	if dv := dvError(t, err); dv.Status != 401 {
		t.Fatalf("status %d, want 401", dv.Status)
	}
}

func TestUnreachableIsMarked(t *testing.T) {
	srv := httptest.NewServer(emulator.New().Handler())
	srv.Close()
	c, _ := dataverse.NewClient(srv.URL)
	_, err := c.Query(context.Background(), "accounts", nil)
	if !errors.Is(err, domain.ErrDataverseUnreachable) {
		t.Fatalf("err = %v, want ErrDataverseUnreachable", err)
	}
	if f := domain.ClassifyDataverse(err); f == nil || !f.Transient() {
		t.Fatalf("unreachable classified as %+v", f)
	}
}

func TestQueryFiltersWithAndAndTop(t *testing.T) {
	c, _ := newClient(t)
	ctx := context.Background()
	for i, city := range []string{"Atlanta", "Atlanta", "Seattle"} {
		if _, err := c.Create(ctx, "accounts", domain.Attributes{"name": "A" + string(rune('0'+i)), "address1_city": city}); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := c.Query(ctx, "accounts", url.Values{"$filter": {"address1_city eq 'Atlanta' and name eq 'A1'"}, "$select": {"name"}})
	if err != nil || len(rows) != 1 || rows[0]["name"] != "A1" || rows[0]["address1_city"] != nil {
		t.Fatalf("filtered rows = %v, %v", rows, err)
	}
	rows, err = c.Query(ctx, "accounts", url.Values{"$filter": {"address1_city eq 'Atlanta'"}, "$top": {"1"}})
	if err != nil || len(rows) != 1 {
		t.Fatalf("$top=1 gave %d rows, %v", len(rows), err)
	}
}

// The token is fetched once and reused until shortly before it expires.
func TestTokenIsCachedAcrossRequests(t *testing.T) {
	emu := emulator.New()
	var tokenRequests int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/token") {
			tokenRequests++
		}
		emu.Handler().ServeHTTP(w, r)
	}))
	defer srv.Close()
	creds := dataverse.ClientCredentials{TokenURL: srv.URL + "/" + emulator.DefaultTenant + "/oauth2/v2.0/token",
		ClientID: emulator.DefaultApp.ClientID, ClientSecret: emulator.DefaultApp.ClientSecret}
	c, _ := dataverse.NewClient(srv.URL, dataverse.WithTokenSource(creds.TokenSource(context.Background(), srv.URL)))
	for i := 0; i < 3; i++ {
		if _, err := c.Query(context.Background(), "accounts", nil); err != nil {
			t.Fatal(err)
		}
	}
	if tokenRequests != 1 {
		t.Fatalf("%d token requests for 3 calls, want 1", tokenRequests)
	}
}

func TestDuplicateDetectionOnlyWhenAsked(t *testing.T) {
	plain, _ := newClient(t)
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if _, err := plain.Create(ctx, "accounts", domain.Attributes{"name": "Contoso"}); err != nil {
			t.Fatalf("without duplicate detection, create %d: %v", i+1, err)
		}
	}
	c, _ := countedClient(t, dataverse.WithDuplicateDetection(true))
	if _, err := c.Create(ctx, "accounts", domain.Attributes{"name": "Contoso"}); err != nil {
		t.Fatal(err)
	}
	_, err := c.Create(ctx, "accounts", domain.Attributes{"name": "CONTOSO"})
	dv := dvError(t, err)
	if dv.Status != 500 || dv.Code != "0x80040333" {
		t.Fatalf("duplicate: %d %s", dv.Status, dv.Code)
	}
	if f := domain.ClassifyDataverse(err); f.Kind != domain.KindDuplicateRecord || f.Class != domain.ClassCoupling {
		t.Fatalf("classified %+v; duplicate detection's 500 is not a server error", f)
	}
}

// A token endpoint that takes the connection and never answers must not wedge the callers: each
// gives up at its own deadline (no lock held across the fetch), and the fetch itself times out.
func TestAHangingTokenEndpointHoldsNoCallerPastItsDeadline(t *testing.T) {
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hang.Close()
	defer close(release)
	creds := dataverse.ClientCredentials{TokenURL: hang.URL + "/token", ClientID: "app", ClientSecret: "s3cret-value", Timeout: 400 * time.Millisecond}
	c, err := dataverse.NewClient(hang.URL, dataverse.WithTokenSource(creds.TokenSource(context.Background(), hang.URL)))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			_, _, errs[i] = c.RowVersion(ctx, domain.RowRef{EntitySet: "accounts", ID: uuid.New()})
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("callers are still waiting for the token endpoint")
	}
	for _, err := range errs {
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want the caller's deadline", err)
		}
	}
	// With no deadline of its own, a caller waits for the fetch's own timeout, not for ever.
	_, _, err = c.RowVersion(context.Background(), domain.RowRef{EntitySet: "accounts", ID: uuid.New()})
	if err == nil || strings.Contains(err.Error(), "s3cret-value") {
		t.Fatalf("err = %v, want a token failure that names no secret", err)
	}
}
