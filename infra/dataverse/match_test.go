package dataverse_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/dataverse"
	"github.com/dvsync/dvsync/infra/emulator"
)

func byName(name string) domain.MatchQuery {
	return domain.MatchQuery{EntitySet: "accounts", IDAttribute: "accountid", NameAttribute: "name", Top: 5,
		Values: []domain.MatchValue{{Attribute: "name", Value: name}}}
}

func accountQuery(number string) domain.MatchQuery {
	return domain.MatchQuery{EntitySet: "accounts", IDAttribute: "accountid", NameAttribute: "name", Top: 5,
		Values: []domain.MatchValue{{Attribute: "accountnumber", Value: number}}}
}

// Lookups of many records made at the same time go to Dataverse as one GET per shape, each
// answered with its own rows: none, one (with its name and version), or several; text without regard to case,
// quotes escaped. Alone, a lookup is the client's own GET.
func TestLookupsOfManyRecordsAreMergedIntoOneGET(t *testing.T) {
	p := newPool(t)
	single := p.clients[0]
	ctx := context.Background()
	one, twinA, twinB := accountRef(), accountRef(), accountRef()
	for _, r := range []struct {
		row          domain.RowRef
		number, name string
	}{{one, "C10000", "Adatum"}, {twinA, "C'20000", "Trey"}, {twinB, "C'20001", "trey"}} {
		if _, err := single.CreateRow(ctx, r.row, domain.Attributes{"accountnumber": r.number, "name": r.name}); err != nil {
			t.Fatal(err)
		}
	}
	b := p.batched(t, dataverse.BatchConfig{Linger: 200 * time.Millisecond})
	before := p.counts[0].get("GET accounts")
	const n = 12
	got := make([][]domain.FoundRow, n)
	errs := make([]error, n)
	var calls []func()
	for i := 0; i < n; i++ {
		number := fmt.Sprintf("NONE%d", i)
		q := accountQuery(number)
		switch i {
		case 0:
			q = accountQuery("C10000")
		case 1:
			q = byName("TREY")
		}
		calls = append(calls, func() { got[i], errs[i] = b.FindRows(ctx, q) })
	}
	together(calls...)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("lookup %d: %v", i, err)
		}
	}
	if len(got[0]) != 1 || got[0][0].ID != one.ID || got[0][0].Name != "Adatum" || got[0][0].Version == "" ||
		got[0][0].Values["accountnumber"] != "C10000" {
		t.Fatalf("lookup of C10000 = %+v", got[0])
	}
	ids := map[uuid.UUID]bool{}
	for _, r := range got[1] {
		ids[r.ID] = true
	}
	if len(got[1]) != 2 || !ids[twinA.ID] || !ids[twinB.ID] {
		t.Fatalf("lookup of TREY = %+v; want both accounts (Dataverse does not regard case)", got[1])
	}
	for i := 2; i < n; i++ {
		if got[i] == nil || len(got[i]) != 0 {
			t.Fatalf("lookup %d = %#v; want an empty answer", i, got[i])
		}
	}
	// Two shapes (by number, by name): two merged GETs, in one $batch.
	if gets, batches := p.counts[0].get("GET accounts")-before, p.counts[0].get("POST $batch"); gets != 0 || batches != 1 {
		t.Fatalf("%d GETs and %d $batch requests for %d lookups; want one request", gets, batches, n)
	}
	// Alone it is a single GET, as the client sends it.
	before = p.counts[0].get("GET accounts")
	if rows, err := b.FindRows(ctx, accountQuery("C10000")); err != nil || len(rows) != 1 || rows[0].ID != one.ID {
		t.Fatalf("a lookup alone = %+v, %v", rows, err)
	}
	if rows, err := single.FindRows(ctx, accountQuery("C10000")); err != nil || len(rows) != 1 || rows[0].ID != one.ID {
		t.Fatalf("single lookup = %+v, %v", rows, err)
	}
	if gets := p.counts[0].get("GET accounts") - before; gets != 2 {
		t.Fatalf("%d GETs for two lookups alone", gets)
	}
	if _, err := single.FindRows(ctx, domain.MatchQuery{EntitySet: "accounts", IDAttribute: "accountid"}); err == nil {
		t.Fatal("a lookup without values must be refused")
	}
}

// rowIDs is the set of a lookup's rows.
func rowIDs(rows []domain.FoundRow) map[uuid.UUID]bool {
	ids := map[uuid.UUID]bool{}
	for _, r := range rows {
		ids[r.ID] = true
	}
	return ids
}

// Whatever mix of records look up at once, each gets the rows its own query finds: by one field
// or two, values that differ in case, accents or trailing spaces (which the merged answer must
// not hand to the wrong record), several rows for one value, the same value asked twice, and
// values that are not text (which keep their own query).
func TestAMergedLookupAnswersEachRecordAsItsOwnQuery(t *testing.T) {
	p := newPool(t)
	single := p.clients[0]
	ctx := context.Background()
	for _, a := range []struct{ number, name string }{
		{"N1", "Adatum"}, {"M1", "adatum"}, {"N2", "Café"}, {"N3", "Cafe"}, {"N4", "Fabrikam "}, {"N5", "Fabrikam"},
		{"N6", "Straße"}, {"N7", "Strasse"}, {"N8", "O'Neil"}, {"D1", "Trey"}, {"D2", "Trey"}, {"D3", "trey"},
	} {
		if _, err := single.CreateRow(ctx, accountRef(), domain.Attributes{"accountnumber": a.number, "name": a.name}); err != nil {
			t.Fatal(err)
		}
	}
	byBoth := func(number, name string) domain.MatchQuery {
		return domain.MatchQuery{EntitySet: "accounts", IDAttribute: "accountid", NameAttribute: "name", Top: 5,
			Values: []domain.MatchValue{{Attribute: "accountnumber", Value: number}, {Attribute: "name", Value: name}}}
	}
	qs := []domain.MatchQuery{
		accountQuery("N1"), accountQuery("n1"), accountQuery("N2"), byName("Trey"), byName("Trey"), accountQuery("NONE"),
		byName("Café"), byName("Cafe"), byName("CAFE"), byName("Fabrikam"), byName("Fabrikam "), byName("Straße"), byName("Strasse"),
		byName("O'Neil"), byName("Nobody"),
		byBoth("N1", "ADATUM"), byBoth("N2", "Cafe"), byBoth("D3", "TREY"), byBoth("N8", "O'Neil"),
		{EntitySet: "accounts", IDAttribute: "accountid", NameAttribute: "name", Top: 5,
			Values: []domain.MatchValue{{Attribute: "accountnumber", Value: int64(1)}}}, // not text: its own query
	}
	want := make([][]domain.FoundRow, len(qs))
	for i, q := range qs {
		rows, err := single.FindRows(ctx, q)
		if err != nil && i != len(qs)-1 {
			t.Fatalf("own query %d: %v", i, err)
		}
		want[i] = rows
	}
	b := p.batched(t, dataverse.BatchConfig{Linger: 200 * time.Millisecond})
	got := make([][]domain.FoundRow, len(qs))
	errs := make([]error, len(qs))
	var calls []func()
	for i, q := range qs {
		calls = append(calls, func() { got[i], errs[i] = b.FindRows(ctx, q) })
	}
	before := p.counts[0].total()
	together(calls...)
	// One merged GET, after the lookups' linger; the number's own query may go before it, and the
	// values that reduce like another's (n1 beside N1, Cafe beside Café) after it.
	if sent := p.counts[0].total() - before; sent > 3 {
		t.Errorf("%d requests for %d lookups; want the merged GET, then the own queries of those that share its key", sent, len(qs))
	}
	for i, q := range qs {
		if i == len(qs)-1 {
			continue // compared below: an error of its own
		}
		if errs[i] != nil {
			t.Fatalf("%v: %v", q.Values, errs[i])
		}
		if g, w := rowIDs(got[i]), rowIDs(want[i]); len(got[i]) != len(want[i]) || !maps.Equal(g, w) {
			t.Errorf("%v: merged %v, own query %v", q.Values, got[i], want[i])
		}
	}
	if len(want[3]) != 3 || len(rowIDs(got[6])) != 1 {
		t.Fatalf("the emulator itself: Trey %d rows, Café %d: the test means nothing", len(want[3]), len(got[6]))
	}
	if (errs[len(qs)-1] == nil) != (want[len(qs)-1] != nil) {
		t.Errorf("the number's lookup: %v, own query %v", errs[len(qs)-1], want[len(qs)-1])
	}
}

// When the merged answer is cut by its $top, the records that may have lost rows to the cut ask
// their own queries; the ones that have all they asked for keep theirs.
func TestACutMergedAnswerFallsBackToTheRecordsOwnQueries(t *testing.T) {
	p := newPool(t)
	single := p.clients[0]
	ctx := context.Background()
	for i := 0; i < 40; i++ {
		if _, err := single.CreateRow(ctx, accountRef(), domain.Attributes{"accountnumber": fmt.Sprint("M", i), "name": "Many"}); err != nil {
			t.Fatal(err)
		}
	}
	few := map[string]uuid.UUID{}
	for _, number := range []string{"F1", "F2", "F3"} {
		row := accountRef()
		if _, err := single.CreateRow(ctx, row, domain.Attributes{"accountnumber": number, "name": "Few " + number}); err != nil {
			t.Fatal(err)
		}
		few[number] = row.ID
	}
	b := p.batched(t, dataverse.BatchConfig{Linger: 200 * time.Millisecond})
	// The merged $top is 4×5+1 = 21 of the 43 rows that match: some of F1–F3 are cut in most
	// rounds, which rows Dataverse picks for a $top being its own.
	for round := 0; round < 5; round++ {
		numbers := []string{"Many", "Few F1", "Few F2", "Few F3"}
		got := make([][]domain.FoundRow, len(numbers))
		errs := make([]error, len(numbers))
		var calls []func()
		for i, number := range numbers {
			calls = append(calls, func() { got[i], errs[i] = b.FindRows(ctx, byName(number)) })
		}
		together(calls...)
		for i, number := range numbers {
			if errs[i] != nil {
				t.Fatalf("%s: %v", number, errs[i])
			}
			if number == "Many" {
				if len(got[i]) != 5 {
					t.Fatalf("round %d: Many found %d rows, want its $top of 5", round, len(got[i]))
				}
				continue
			}
			if len(got[i]) != 1 || got[i][0].ID != few[strings.TrimPrefix(number, "Few ")] {
				t.Fatalf("round %d: %s found %+v, want its one row", round, number, got[i])
			}
		}
	}
}

// A merged GET that fails gives each record the failure of its own query: its own request in
// the call stack, not the other records' values.
func TestAFailedMergedLookupIsEachRecordsOwnError(t *testing.T) {
	p := newPool(t)
	b := p.batched(t, dataverse.BatchConfig{Linger: 200 * time.Millisecond})
	numbers := []string{"E1", "E2", "E3"}
	errs := make([]error, len(numbers))
	var calls []func()
	for i, number := range numbers {
		q := domain.MatchQuery{EntitySet: "accounts", IDAttribute: "accountid", NameAttribute: "name", Top: 5,
			Values: []domain.MatchValue{{Attribute: "nosuchcolumn", Value: number}}}
		calls = append(calls, func() { _, errs[i] = b.FindRows(context.Background(), q) })
	}
	together(calls...)
	if gets, batches := p.counts[0].get("GET accounts"), p.counts[0].get("POST $batch"); gets != 1 || batches != 1 {
		t.Errorf("%d GETs and %d $batch requests; want the merged GET, then the records' own queries in one $batch", gets, batches)
	}
	for i, number := range numbers {
		var dv *dataverse.Error
		if !errors.As(errs[i], &dv) || dv.Status != 400 {
			t.Fatalf("%s: %v; want Dataverse's 400", number, errs[i])
		}
		for _, other := range numbers {
			if in := strings.Contains(dv.Request, other) || strings.Contains(errs[i].Error(), other); in != (other == number) {
				t.Errorf("%s: the error names %s: %v; request %q", number, other, in, dv.Request)
			}
		}
	}
}

func TestLiteral(t *testing.T) {
	for v, want := range map[any]string{"O'Neil": "'O''Neil'", int64(3): "3", 2.5: "2.5", true: "true"} {
		if got, err := dataverse.Literal(v); err != nil || got != want {
			t.Errorf("Literal(%v) = %q, %v; want %q", v, got, err, want)
		}
	}
	if _, err := dataverse.Literal([]int{1}); err == nil {
		t.Error("a slice has no literal")
	}
}

// strangerTransport adds a row to every merged GET's answer (a filter with "or") that none of
// the records' values explains, as a collation that equals more than dvsync's key would.
type strangerTransport struct{ base http.RoundTripper }

func (s strangerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := s.base.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || !strings.Contains(req.URL.Query().Get("$filter"), " or ") {
		return resp, err
	}
	raw, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	var page map[string]any
	if err := json.Unmarshal(raw, &page); err != nil {
		return nil, err
	}
	page["value"] = append(page["value"].([]any), map[string]any{"accountid": uuid.NewString(), "name": "Stranger",
		"accountnumber": "ZZ-STRANGER", "@odata.etag": `W/"1"`})
	raw, _ = json.Marshal(page)
	resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(raw)), int64(len(raw))
	resp.Header.Del("Content-Length")
	return resp, nil
}

// A merged answer holding a row that no record's values explain cannot say whose it is: every
// record of that GET asks its own query, and none gets the stranger.
func TestARowNoRecordExplainsSendsTheRecordsOwnQueries(t *testing.T) {
	p := newPool(t)
	ctx := context.Background()
	mine := map[string]uuid.UUID{}
	for _, number := range []string{"S1", "S2", "S3"} {
		row := accountRef()
		if _, err := p.clients[0].CreateRow(ctx, row, domain.Attributes{"accountnumber": number, "name": number}); err != nil {
			t.Fatal(err)
		}
		mine[number] = row.ID
	}
	creds := dataverse.ClientCredentials{TokenURL: p.url + "/" + emulator.DefaultTenant + "/oauth2/v2.0/token",
		ClientID: emulator.DefaultApp.ClientID, ClientSecret: emulator.DefaultApp.ClientSecret}
	transport := dataverse.NewTransport(8)
	t.Cleanup(transport.CloseIdleConnections)
	var gets, batches atomic.Int64
	c, err := dataverse.NewClient(p.url, dataverse.WithTokenSource(creds.TokenSource(ctx, p.url)),
		dataverse.WithHTTPClient(&http.Client{Timeout: 30 * time.Second, Transport: strangerTransport{transport}}),
		dataverse.WithRequestObserver(func(method, entitySet string, _ int, _ time.Duration) {
			switch method + " " + entitySet {
			case "GET accounts":
				gets.Add(1)
			case "POST $batch":
				batches.Add(1)
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	b, err := dataverse.NewBatched([]dataverse.User{{Name: "stranger", Client: c}}, dataverse.BatchConfig{Linger: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	numbers := []string{"S1", "S2", "S3"}
	got := make([][]domain.FoundRow, len(numbers))
	errs := make([]error, len(numbers))
	var calls []func()
	for i, number := range numbers {
		calls = append(calls, func() { got[i], errs[i] = b.FindRows(ctx, accountQuery(number)) })
	}
	together(calls...)
	for i, number := range numbers {
		if errs[i] != nil || len(got[i]) != 1 || got[i][0].ID != mine[number] {
			t.Errorf("%s: %+v, %v; want its own row only", number, got[i], errs[i])
		}
	}
	if gets.Load() != 1 || batches.Load() != 1 {
		t.Errorf("%d GETs and %d $batch requests; want the merged GET, then the own queries in one $batch", gets.Load(), batches.Load())
	}
}

// Callers that cannot wait for a closed gate are told at once, as their own queries would tell
// them, when their lookups share a merged GET: the GET carries their deadlines.
func TestMergedLookupsKeepTheCallersDeadlines(t *testing.T) {
	p := newPool(t)
	b := p.batched(t, dataverse.BatchConfig{Linger: 50 * time.Millisecond})
	p.clients[0].HoldUntil(time.Now().Add(time.Minute))
	timeouts := []time.Duration{5 * time.Second, 20 * time.Second}
	errs := make([]error, len(timeouts))
	ctxErrs := make([]error, len(timeouts))
	var calls []func()
	for i, timeout := range timeouts {
		calls = append(calls, func() {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			_, errs[i] = b.FindRows(ctx, accountQuery(fmt.Sprint("P", i)))
			ctxErrs[i] = ctx.Err()
		})
	}
	together(calls...)
	for i, err := range errs {
		if f := domain.ClassifyDataverse(err); f == nil || f.Kind != domain.KindThrottled || f.RetryAfter < 30*time.Second || ctxErrs[i] != nil {
			t.Errorf("the caller with %s to wait: %v (ctx %v); want the throttling error at once", timeouts[i], err, ctxErrs[i])
		}
	}
	if n := p.counts[0].total(); n != 0 {
		t.Errorf("%d requests sent while the gate was closed", n)
	}
}
