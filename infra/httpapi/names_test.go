package httpapi

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/telemetry"
)

// serveWithDataverse serves ts's store anew with links to a Dataverse environment.
func serveWithDataverse(t *testing.T, ts *testServer, dataverseURL string) *testServer {
	t.Helper()
	s := &Server{Metrics: telemetry.New(nil), Ledger: ts.store, Couplings: ts.store, Tokens: ts.srv.Tokens,
		Log: slog.New(slog.NewTextHandler(ts.log, nil)), Links: Links{DataverseURL: dataverseURL}}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &testServer{t: t, url: srv.URL, store: ts.store, log: ts.log, srv: s}
}

// The coupled-records page, the error page and the API name a Dataverse row by its primary name,
// with its id in the link.
func TestPagesNameTheDataverseRow(t *testing.T) {
	base := newTestServer(t)
	key, row := "NM"+uuid.NewString()[:8], uuid.New()
	setCoupling(t, base, key, domain.Coupling{RowID: row, Entity: "account", RowName: "Adatum <Corporation>", Version: 1,
		Status: domain.CouplingSynced, LastSyncedAt: time.Now()})
	link := "https://org.example.crm.dynamics.com/main.aspx?etn=account&amp;id=" + row.String() + "&amp;pagetype=entityrecord"
	cell := func(ts *testServer) string {
		t.Helper()
		a := ts.do("GET", "/couplings?q="+key, "", ts.signIn(viewerToken))
		m := regexp.MustCompile(`(?s)<td class="row">.*?</td>`).FindString(a.body)
		if a.status != 200 || m == "" {
			t.Fatalf("no Dataverse row cell for %s: %d %s", key, a.status, grep(a.body, key))
		}
		return m
	}

	ts := serveWithDataverse(t, base, "https://org.example.crm.dynamics.com/")
	if c := cell(ts); !strings.Contains(c, `<a href="`+link+`"`) || !strings.Contains(c, ">Adatum &lt;Corporation&gt;</a>") {
		t.Errorf("the coupled-records page's row cell %s; want a link to %s named Adatum <Corporation>", c, link)
	}
	// Without a Dataverse address there is no link, but the name is shown.
	if c := cell(base); strings.Contains(c, "<a ") || !strings.Contains(c, "Adatum &lt;Corporation&gt;") || !strings.Contains(c, row.String()) {
		t.Errorf("without a Dataverse address the row cell is %s", c)
	}

	// The error page's link to the row names it.
	ev := domain.ErrorEvent{Table: "customer", Key: key, Entity: "account", RowID: row.String(),
		Failure: *domain.DestinationDeleted(domain.ChangeEvent{Table: "customer", Key: key}, domain.Mapping{Entity: "account"},
			domain.NamedRow{Entity: "account", ID: row, Name: "Adatum <Corporation>"}, nil)}
	id := seedError(t, base.store, ev)
	a := ts.do("GET", fmt.Sprintf("/errors/%d", id), "", ts.signIn(viewerToken))
	if !strings.Contains(a.body, `<a href="`+link+`" rel="noopener">Open Dataverse row “Adatum &lt;Corporation&gt;”</a>`) {
		t.Errorf("the error page's row link: %s", grep(a.body, "Open Dataverse row"))
	}
	if !strings.Contains(a.body, `coupled to a deleted record (account &#34;Adatum &lt;Corporation&gt;&#34; (`+row.String()+`))`) {
		t.Errorf("the error page's message does not name the row: %s", grep(a.body, "deleted record"))
	}

	// The API gives the name beside the id.
	a = ts.do("GET", "/api/v1/couplings/customer/"+key, "", "Authorization: Bearer "+viewerToken)
	var got struct {
		RowID   uuid.UUID `json:"row_id"`
		RowName string    `json:"row_name"`
	}
	if a.status != 200 || json.Unmarshal([]byte(a.body), &got) != nil || got.RowID != row || got.RowName != "Adatum <Corporation>" {
		t.Errorf("the API's coupling: %d %s", a.status, a.body)
	}
}
