package dataverse_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/dataverse"
	"github.com/dvsync/dvsync/infra/emulator"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// secondApp is another app registration of the emulated environment.
var secondApp = emulator.App{ClientID: "5d0c7a1e-2b3f-4c6d-8e9f-0a1b2c3d4e5f", ClientSecret: "second-secret",
	UserID: uuid.MustParse("6b1e2d3c-4a5f-4e7d-9c8b-1a2b3c4d5e6f")}

// pool is an emulator and a client per app, each counting its requests by method and entity set.
type pool struct {
	emu     *emulator.Emulator
	url     string
	clients []*dataverse.Client
	users   []dataverse.User
	counts  []*requestCount
}

type requestCount struct {
	mu     sync.Mutex
	byKind map[string]int // "POST $batch", "PATCH accounts", ...
	codes  map[string]int // 429 codes
}

func (r *requestCount) get(kind string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byKind[kind]
}

func (r *requestCount) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, v := range r.byKind {
		n += v
	}
	return n
}

func newPool(t testing.TB, apps ...emulator.App) *pool {
	t.Helper()
	emu := emulator.New()
	srv := httptest.NewServer(emu.Handler())
	t.Cleanup(srv.Close)
	p := &pool{emu: emu, url: srv.URL}
	if len(apps) == 0 {
		apps = []emulator.App{emulator.DefaultApp}
	}
	for _, app := range apps {
		if app.ClientID != emulator.DefaultApp.ClientID {
			emu.AddApp(app)
		}
		creds := dataverse.ClientCredentials{TokenURL: srv.URL + "/" + emulator.DefaultTenant + "/oauth2/v2.0/token",
			ClientID: app.ClientID, ClientSecret: app.ClientSecret}
		rc := &requestCount{byKind: map[string]int{}, codes: map[string]int{}}
		transport := dataverse.NewTransport(52)
		t.Cleanup(transport.CloseIdleConnections)
		c, err := dataverse.NewClient(srv.URL, dataverse.WithTokenSource(creds.TokenSource(context.Background(), srv.URL)),
			dataverse.WithHTTPClient(&http.Client{Timeout: 30 * time.Second, Transport: transport}),
			dataverse.WithRequestObserver(func(method, entitySet string, _ int, _ time.Duration) {
				rc.mu.Lock()
				rc.byKind[method+" "+entitySet]++
				rc.mu.Unlock()
			}),
			dataverse.WithThrottleObserver(func(code string) {
				rc.mu.Lock()
				rc.codes[code]++
				rc.mu.Unlock()
			}))
		if err != nil {
			t.Fatal(err)
		}
		p.clients = append(p.clients, c)
		p.users = append(p.users, dataverse.User{Name: app.ClientID, Client: c})
		p.counts = append(p.counts, rc)
	}
	return p
}

func (p *pool) batched(t testing.TB, cfg dataverse.BatchConfig) *dataverse.Batched {
	t.Helper()
	b, err := dataverse.NewBatched(p.users, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// together runs the calls at the same time and waits for all of them.
func together(calls ...func()) {
	var wg sync.WaitGroup
	for _, call := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			call()
		}()
	}
	wg.Wait()
}

func accountRef() domain.RowRef {
	return domain.RowRef{EntitySet: "accounts", ID: uuid.New(), IDAttribute: "accountid"}
}

// Calls made at the same time travel in one $batch, and each caller gets exactly what its single
// call gives: the same version, or the same error with the same status, code, message,
// annotations and call-stack text.
func TestConcurrentCallsShareABatchAndEachGetsItsSingleCallsResult(t *testing.T) {
	p := newPool(t)
	single := p.clients[0]
	b := p.batched(t, dataverse.BatchConfig{Linger: 200 * time.Millisecond})
	ctx := context.Background()

	// Rows as the sync finds them: one to update, one whose version moved on, one to delete.
	updated, stale, deleted, existing := accountRef(), accountRef(), accountRef(), accountRef()
	versions := map[uuid.UUID]string{}
	for _, row := range []domain.RowRef{updated, stale, deleted, existing} {
		v, err := single.CreateRow(ctx, row, domain.Attributes{"name": "before"})
		if err != nil {
			t.Fatal(err)
		}
		versions[row.ID] = v
	}
	oldStale := versions[stale.ID]
	if versions[stale.ID], _ = single.UpdateRow(ctx, stale, domain.Attributes{"name": "moved on"}, oldStale); versions[stale.ID] == "" {
		t.Fatal("could not move the stale row on")
	}
	missing := accountRef()
	creates := make([]domain.RowRef, 20)
	createdVersions := make([]string, len(creates))
	createErrs := make([]error, len(creates))
	var updVersion, staleRead string
	var updErr, mismatchErr, existsErr, notFoundErr, invalidErr, delErr, readErr, readMissingErr error
	var readFound, missingFound bool
	calls := []func(){
		func() {
			updVersion, updErr = b.UpdateRow(ctx, updated, domain.Attributes{"name": "after"}, versions[updated.ID])
		},
		func() {
			_, mismatchErr = b.UpdateRow(ctx, stale, domain.Attributes{"name": "late write"}, oldStale)
		},
		func() { _, existsErr = b.CreateRow(ctx, existing, domain.Attributes{"name": "again"}) },
		func() {
			_, notFoundErr = b.UpdateRow(ctx, missing, domain.Attributes{"name": "gone"}, domain.AnyVersion)
		},
		func() {
			_, invalidErr = b.CreateRow(ctx, accountRef(), domain.Attributes{"name": strings.Repeat("x", 161)})
		},
		func() { delErr = b.DeleteRow(ctx, deleted, versions[deleted.ID]) },
		func() { staleRead, readFound, readErr = b.RowVersion(ctx, stale) },
		func() { _, missingFound, readMissingErr = b.RowVersion(ctx, missing) },
	}
	for i := range creates {
		creates[i] = accountRef()
		calls = append(calls, func() {
			createdVersions[i], createErrs[i] = b.CreateRow(ctx, creates[i], domain.Attributes{"name": fmt.Sprint("new ", i)})
		})
	}
	together(calls...)

	if n, all := p.counts[0].get("POST $batch"), p.counts[0].total(); n != 1 || all-n != 5 {
		t.Errorf("%d $batch requests and %d others, want 1 and the 5 of the set-up", n, all-n)
	}
	if updErr != nil || updVersion == "" || updVersion == versions[updated.ID] {
		t.Errorf("update: %q, %v", updVersion, updErr)
	}
	if v, found, err := single.RowVersion(ctx, updated); err != nil || !found || v != updVersion {
		t.Errorf("the updated row's version is %q (%v, %v), the batch returned %q", v, found, err, updVersion)
	}
	for i, row := range creates {
		if createErrs[i] != nil {
			t.Fatalf("create %d: %v", i, createErrs[i])
		}
		if v, found, err := single.RowVersion(ctx, row); err != nil || !found || v != createdVersions[i] {
			t.Errorf("created row %d has version %q (%v), the batch returned %q", i, v, err, createdVersions[i])
		}
	}
	if delErr != nil {
		t.Errorf("delete: %v", delErr)
	}
	if _, found, _ := single.RowVersion(ctx, deleted); found {
		t.Error("the deleted row is still there")
	}
	if readErr != nil || !readFound || staleRead != versions[stale.ID] {
		t.Errorf("row version: %q %v %v, want %q", staleRead, readFound, readErr, versions[stale.ID])
	}
	if readMissingErr != nil || missingFound {
		t.Errorf("row version of a missing row: found %v, %v", missingFound, readMissingErr)
	}
	if !domain.IsVersionMismatch(mismatchErr) || !domain.IsAlreadyExists(existsErr) {
		t.Errorf("mismatch %v; exists %v", mismatchErr, existsErr)
	}
	if rows := p.emu.Row("accounts", stale.ID); rows["name"] != "moved on" {
		t.Errorf("the late write landed: %v", rows["name"])
	}
	// The single calls, made now on the same rows, fail alike to the letter.
	sameAsSingle := func(what string, batched error, alone func() error) {
		t.Helper()
		want := alone()
		if batched == nil || want == nil || batched.Error() != want.Error() {
			t.Errorf("%s: batched %v, single %v", what, batched, want)
			return
		}
		got, exp := dvError(t, batched), dvError(t, want)
		if got.Status != exp.Status || got.Code != exp.Code || got.Message != exp.Message || fmt.Sprint(got.Annotations) != fmt.Sprint(exp.Annotations) ||
			got.Request != exp.Request || got.Response != exp.Response {
			t.Errorf("%s:\nbatched %#v\nsingle  %#v", what, *got, *exp)
		}
		if got.MessageName() == "" {
			t.Errorf("%s: no annotations", what)
		}
	}
	sameAsSingle("412 mismatch", mismatchErr, func() error {
		_, err := single.UpdateRow(ctx, stale, domain.Attributes{"name": "late write"}, oldStale)
		return err
	})
	sameAsSingle("412 exists", existsErr, func() error {
		_, err := single.CreateRow(ctx, existing, domain.Attributes{"name": "again"})
		return err
	})
	sameAsSingle("404", notFoundErr, func() error {
		_, err := single.UpdateRow(ctx, missing, domain.Attributes{"name": "gone"}, domain.AnyVersion)
		return err
	})
	if dv := dvError(t, invalidErr); dv.Status != 400 || dv.Code != "0x80044331" || !strings.Contains(dv.Request, strings.Repeat("x", 161)) {
		t.Errorf("validation error: %+v", dv)
	}
}

// A call alone is sent alone, as the single call.
func TestACallAloneIsASingleRequest(t *testing.T) {
	p := newPool(t)
	b := p.batched(t, dataverse.BatchConfig{Linger: time.Millisecond})
	if _, err := b.CreateRow(context.Background(), accountRef(), domain.Attributes{"name": "alone"}); err != nil {
		t.Fatal(err)
	}
	if n, all := p.counts[0].get("PATCH accounts"), p.counts[0].total(); n != 1 || all != 1 {
		t.Errorf("%d PATCH of %d requests, want 1 of 1", n, all)
	}
}

// A failure of the whole $batch (503, 429) is every caller's, with its status and code.
func TestAWholeBatchFailureReachesEveryCaller(t *testing.T) {
	p := newPool(t)
	b := p.batched(t, dataverse.BatchConfig{Linger: 200 * time.Millisecond})
	ctx := context.Background()
	run := func() []error {
		errs := make([]error, 10)
		calls := make([]func(), len(errs))
		for i := range calls {
			calls[i] = func() { _, errs[i] = b.CreateRow(ctx, accountRef(), domain.Attributes{"name": "x"}) }
		}
		together(calls...)
		return errs
	}
	if err := p.emu.InjectFault(emulator.Fault{Kind: "status", Status: 503, Count: 1}); err != nil {
		t.Fatal(err)
	}
	for i, err := range run() {
		if dv := dvError(t, err); dv.Status != 503 || !strings.HasPrefix(dv.Request, "PATCH /api/data/v9.2/accounts(") {
			t.Errorf("caller %d: %+v", i, dv)
		}
	}
	if n := p.counts[0].get("POST $batch"); n != 1 {
		t.Errorf("%d $batch requests, want 1", n)
	}

	p.emu.SetLimits(emulator.Limits{Requests: 1, Window: 2 * time.Second})
	if _, err := p.clients[0].Query(ctx, "accounts", nil); err != nil { // the window's one request
		t.Fatal(err)
	}
	for i, err := range run() {
		if f := domain.ClassifyDataverse(err); f == nil || f.Kind != domain.KindThrottled || dvError(t, err).Code != "0x80072322" || f.RetryAfter <= 0 {
			t.Errorf("caller %d: %v", i, err)
		}
	}
	if time.Until(p.clients[0].HeldUntil()) <= 0 {
		t.Error("the 429 did not close the user's gate")
	}
	if rows, _ := p.emu.Rows("accounts"); len(rows) != 0 {
		t.Errorf("%d rows written by failed batches", len(rows))
	}
}

// A 401 of the whole $batch (a revoked token) is retried once with a fresh token, as a single
// call's is; the callers see nothing of it.
func TestABatchIsRetriedOnceWithAFreshToken(t *testing.T) {
	p := newPool(t)
	b := p.batched(t, dataverse.BatchConfig{Linger: 100 * time.Millisecond})
	ctx := context.Background()
	if _, err := p.clients[0].Query(ctx, "accounts", nil); err != nil { // a token to revoke
		t.Fatal(err)
	}
	p.emu.RevokeTokens()
	calls := make([]func(), 5)
	for i := range calls {
		calls[i] = func() {
			if _, err := b.CreateRow(ctx, accountRef(), domain.Attributes{"name": "x"}); err != nil {
				t.Errorf("create after the token was revoked: %v", err)
			}
		}
	}
	together(calls...)
	if n := p.counts[0].get("POST $batch"); n != 2 {
		t.Errorf("%d $batch requests, want 2 (a 401, then its retry)", n)
	}
	if rows, _ := p.emu.Rows("accounts"); len(rows) != 5 {
		t.Errorf("%d rows, want 5", len(rows))
	}
}

// The calls are spread over the users; a user Dataverse throttles is left alone until its gate
// opens, while the other carries the load.
func TestTwoUsersSplitTheLoadAndAreThrottledSeparately(t *testing.T) {
	p := newPool(t, emulator.DefaultApp, secondApp)
	b := p.batched(t, dataverse.BatchConfig{Size: 5, Linger: 50 * time.Millisecond})
	ctx := context.Background()
	creates := func(n int) {
		calls := make([]func(), n)
		for i := range calls {
			calls[i] = func() {
				if _, err := b.CreateRow(ctx, accountRef(), domain.Attributes{"name": "x"}); err != nil {
					t.Errorf("create: %v", err)
				}
			}
		}
		together(calls...)
	}
	creates(40)
	first, second := p.counts[0].get("POST $batch"), p.counts[1].get("POST $batch")
	if first < 2 || second < 2 || first+second > 10 {
		t.Fatalf("batches per user %d and %d; want both used, 8 to 10 in all", first, second)
	}

	// The first user spends its window; Dataverse throttles it, and it alone.
	p.emu.SetLimits(emulator.Limits{Requests: 2, Window: time.Minute})
	for range 2 {
		if _, err := p.clients[0].Query(ctx, "accounts", nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.clients[0].Query(ctx, "accounts", nil); domain.ClassifyDataverse(err) == nil || domain.ClassifyDataverse(err).Kind != domain.KindThrottled {
		t.Fatalf("the third request of the window: %v", err)
	}
	p.counts[0].mu.Lock()
	throttles := p.counts[0].codes["0x80072322"]
	p.counts[0].mu.Unlock()
	if throttles != 1 {
		t.Errorf("the throttle observer saw %d 429s of 0x80072322, want 1", throttles)
	}
	before := p.counts[0].total()
	p.emu.SetLimits(emulator.Limits{Requests: 100, Window: time.Minute}) // the second user has room
	creates(2)                                                           // a batch
	creates(1)                                                           // a single call
	if n := p.counts[0].total(); n != before {
		t.Errorf("the throttled user got %d requests while its gate was closed", n-before)
	}
	if time.Until(p.clients[1].HeldUntil()) > 0 {
		t.Error("the second user is held back too")
	}
}

// Execution-time throttling (0x80072321) halves the batch size, down to the floor; batches that go
// through grow it back.
func TestBatchSizeShrinksOnExecutionTimeThrottlingAndGrowsBack(t *testing.T) {
	p := newPool(t)
	b := p.batched(t, dataverse.BatchConfig{Size: 40, MinSize: 15, Linger: 20 * time.Millisecond})
	ctx := context.Background()
	pair := func() []error {
		errs := make([]error, 2)
		together(func() { _, errs[0] = b.CreateRow(ctx, accountRef(), domain.Attributes{"name": "x"}) },
			func() { _, errs[1] = b.CreateRow(ctx, accountRef(), domain.Attributes{"name": "y"}) })
		return errs
	}
	// Any execution time spends the window's budget: the batch after the first is throttled.
	p.emu.SetLimits(emulator.Limits{ExecutionTime: time.Nanosecond, Window: time.Second})
	for _, want := range []int{20, 15, 15} {
		if _, err := p.clients[0].Query(ctx, "accounts", nil); err != nil {
			t.Fatalf("a request to spend the budget: %v", err) // waits for the gate, if closed
		}
		for i, err := range pair() {
			if dv := dvError(t, err); dv.Code != "0x80072321" {
				t.Fatalf("call %d: %+v", i, dv)
			}
		}
		if got := b.BatchSize(); got != want {
			t.Fatalf("batch size %d after execution-time throttling, want %d", got, want)
		}
	}
	p.emu.SetLimits(emulator.Limits{})
	last := b.BatchSize()
	for range 20 {
		for _, err := range pair() { // the first waits for the gate to open
			if err != nil {
				t.Fatal(err)
			}
		}
		if got := b.BatchSize(); got < last {
			t.Fatalf("the batch size fell from %d to %d without throttling", last, got)
		}
		last = b.BatchSize()
	}
	if last != 40 {
		t.Errorf("batch size %d after 20 batches that went through, want 40 again", last)
	}
}

// A caller whose deadline comes before the user's gate opens gets the throttling error at once,
// not a timeout, as its single call would.
func TestACallerThatCannotWaitForTheGateIsToldAtOnce(t *testing.T) {
	p := newPool(t)
	b := p.batched(t, dataverse.BatchConfig{Linger: time.Millisecond})
	p.clients[0].HoldUntil(time.Now().Add(time.Minute))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := b.CreateRow(ctx, accountRef(), domain.Attributes{"name": "x"})
	if f := domain.ClassifyDataverse(err); f == nil || f.Kind != domain.KindThrottled || f.RetryAfter < 50*time.Second || ctx.Err() != nil {
		t.Fatalf("%v (ctx %v)", err, ctx.Err())
	}
	if n := p.counts[0].total(); n != 0 {
		t.Errorf("%d requests sent while the gate was closed", n)
	}
}

// With every request the user may have in flight busy, calls gather into fuller batches.
func TestBatchesFillWhileDataverseIsBusy(t *testing.T) {
	p := newPool(t)
	p.emu.SetLimits(emulator.Limits{DOPHint: 1})
	p.emu.SetLatency(emulator.Latency{PerRequest: 100 * time.Millisecond})
	b := p.batched(t, dataverse.BatchConfig{Linger: 0})
	ctx := context.Background()
	if _, _, err := b.RowVersion(ctx, accountRef()); err != nil { // learns the hint of 1
		t.Fatal(err)
	}
	var sent atomic.Int64
	calls := make([]func(), 50)
	for i := range calls {
		calls[i] = func() {
			if _, err := b.CreateRow(ctx, accountRef(), domain.Attributes{"name": "x"}); err != nil {
				t.Errorf("create: %v", err)
			}
			sent.Add(1)
		}
	}
	together(calls...)
	// Without lingering, the first call goes alone; the others gather while it is in flight.
	if n := p.counts[0].total() - 1; n > 4 {
		t.Errorf("%d requests for 50 calls with one in flight at a time; want them gathered into a few", n)
	}
	if sent.Load() != 50 {
		t.Errorf("%d calls returned", sent.Load())
	}
}

func TestBatchedRefusesCallsAfterClose(t *testing.T) {
	p := newPool(t)
	b, err := dataverse.NewBatched(p.users, dataverse.BatchConfig{})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if _, err := b.CreateRow(context.Background(), accountRef(), domain.Attributes{"name": "x"}); err == nil {
		t.Fatal("a call after Close was accepted")
	}
	if _, err := dataverse.NewBatched(p.users, dataverse.BatchConfig{Size: 1001}); err == nil {
		t.Error("a batch size over Dataverse's 1000 was accepted")
	}
	if _, err := dataverse.NewBatched(nil, dataverse.BatchConfig{}); err == nil {
		t.Error("a port without users was accepted")
	}
}

// BenchmarkWrites compares the sync lanes' writes made as single calls with the same writes through
// the batched port, against the emulator with a round trip of 20 ms and 2 ms per record (its
// default x-ms-dop-hint of 4 caps the requests in flight). One op is 200 lanes each creating a row
// and updating it once.
func BenchmarkWrites(b *testing.B) {
	const lanes = 200
	for _, mode := range []string{"single", "batched"} {
		b.Run(mode, func(b *testing.B) {
			p := newPool(b)
			p.emu.SetLatency(emulator.Latency{PerRequest: 20 * time.Millisecond, PerRecord: 2 * time.Millisecond})
			var port domain.Dataverse = p.clients[0]
			if mode == "batched" {
				port = p.batched(b, dataverse.BatchConfig{Linger: dataverse.DefaultBatchLinger})
			}
			ctx := context.Background()
			b.ResetTimer()
			for range b.N {
				calls := make([]func(), lanes)
				for i := range calls {
					calls[i] = func() {
						row := accountRef()
						v, err := port.CreateRow(ctx, row, domain.Attributes{"name": "v1"})
						if err == nil {
							_, err = port.UpdateRow(ctx, row, domain.Attributes{"name": "v2"}, v)
						}
						if err != nil {
							b.Error(err)
						}
					}
				}
				together(calls...)
			}
			b.StopTimer()
			b.ReportMetric(float64(p.counts[0].total())/float64(b.N), "requests/op")
			b.ReportMetric(float64(2*lanes*b.N)/b.Elapsed().Seconds(), "writes/s")
		})
	}
}
