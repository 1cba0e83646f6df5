package httpapi

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// While a preflight error is open every page shows the setup banner and the API lists it; once a
// check no longer finds it, both are clear.
func TestSetupBannerAndPreflightAPIFollowTheOpenPreflightErrors(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	key := "account/prvWrite" + uuid.NewString()[:8]
	f := domain.MissingPrivilegeGap(domain.Principal{UserID: "u"}, domain.PrivilegeNeed{Entity: "account", Verb: "Write", Tables: []string{"customer"}}, "prvWriteAccount")
	at := time.Now().UTC().Truncate(time.Millisecond)
	if err := ts.store.RecordError(ctx, domain.ErrorEvent{ID: "preflight-" + uuid.NewString(), OccurredAt: at, Failure: *f,
		Table: domain.PreflightTable, Key: key, Entity: "account", Stage: domain.PreflightStage}); err != nil {
		t.Fatal(err)
	}
	cookie := ts.signIn(viewerToken)
	a := ts.do("GET", "/couplings", "", cookie)
	if a.status != 200 || !strings.Contains(a.body, `id="setup-banner"`) || !strings.Contains(a.body, `href="/errors?class=setup&amp;table=preflight"`) {
		t.Fatalf("an open preflight error: %d, banner %q", a.status, grep(a.body, "setup-banner"))
	}
	var body struct {
		OK     bool                  `json:"ok"`
		Errors []storage.StoredError `json:"errors"`
	}
	api := ts.do("GET", "/api/v1/preflight", "", "Authorization: Bearer "+viewerToken)
	if err := json.Unmarshal([]byte(api.body), &body); err != nil || api.status != 200 || body.OK || len(body.Errors) == 0 {
		t.Fatalf("GET /api/v1/preflight: %d %s", api.status, api.body)
	}
	if err := ts.store.ResolvePreflight(ctx, domain.PreflightChecked{Table: domain.PreflightTable, Gaps: []string{}, Keys: []string{key}, At: at.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	if a := ts.do("GET", "/couplings", "", cookie); a.status != 200 || strings.Contains(a.body, `id="setup-banner"`) {
		t.Fatalf("after a passing check: %d, banner %q", a.status, grep(a.body, "setup-banner"))
	}
	api = ts.do("GET", "/api/v1/preflight", "", "Authorization: Bearer "+viewerToken)
	if err := json.Unmarshal([]byte(api.body), &body); err != nil || !body.OK || len(body.Errors) != 0 {
		t.Fatalf("GET /api/v1/preflight after a passing check: %d %s", api.status, api.body)
	}
}
