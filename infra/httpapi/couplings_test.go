package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/consumers/coupling"
	"github.com/dvsync/dvsync/consumers/replay"
	"github.com/dvsync/dvsync/consumers/syncworker"
	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/events"
	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/infra/storage"
)

// withCouplingActions gives a test server the coupling actions on a real store and an embedded
// NATS server.
func withCouplingActions(t *testing.T, ts *testServer) jetstream.JetStream {
	t.Helper()
	js := withReplay(t, ts)
	ts.srv.Coupling = &coupling.Actions{Store: ts.store, Mappings: domain.DefaultMappings(), Replay: ts.srv.Replay,
		Changes: natsjs.ChangeFinder{JS: js}, JS: js, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	return js
}

func setCoupling(t *testing.T, ts *testServer, key string, c domain.Coupling) {
	t.Helper()
	if err := ts.store.UpdateCoupling(context.Background(), "customer", key, func(_ context.Context, cur domain.Coupling, _ domain.RecordLock) (domain.Coupling, error) {
		c.Table, c.Key = "customer", key
		return c, nil
	}); err != nil {
		t.Fatal(err)
	}
}

func couplingOf(t *testing.T, ts *testServer, key string) domain.Coupling {
	t.Helper()
	c, err := ts.store.Coupling(context.Background(), "customer", key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func problemDetail(t *testing.T, a answer) string {
	t.Helper()
	var p struct{ Detail string }
	if err := json.Unmarshal([]byte(a.body), &p); err != nil {
		t.Fatalf("not a problem body: %s", a.body)
	}
	return p.Detail
}

func audited(t *testing.T, ts *testServer, action, target string) bool {
	t.Helper()
	entries, err := ts.store.Audit(context.Background(), 200)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Actor == "otto" && e.Action == action && strings.Contains(e.Target, target) {
			return true
		}
	}
	return false
}

func TestCouplingActionsAPI(t *testing.T) {
	ts := newTestServer(t)
	js := withCouplingActions(t, ts)
	op, viewer := "Authorization: Bearer "+operatorToken, "Authorization: Bearer "+viewerToken
	n := seeded.Add(1)
	k1, k2 := fmt.Sprintf("CA%d-1", n), fmt.Sprintf("CA%d-2", n)
	row := uuid.New()
	path := func(key, action string) string {
		return "/api/v1/couplings/customer/" + url.PathEscape(key) + "/" + action
	}
	body := `{"row_id":"` + row.String() + `"}`

	if a := ts.do("POST", path(k1, "couple"), body, viewer); a.status != http.StatusForbidden {
		t.Fatalf("a viewer's couple: %d %s", a.status, a.body)
	}
	if a := ts.do("POST", path(k1, "couple"), `{"row_id":"not-a-guid"}`, op); a.status != http.StatusBadRequest {
		t.Fatalf("couple to no GUID: %d %s", a.status, a.body)
	}
	if a := ts.do("POST", "/api/v1/couplings/nosuchtable/x/couple", body, op); a.status != http.StatusNotFound {
		t.Fatalf("couple in a table no mapping covers: %d %s", a.status, a.body)
	}

	// Couple: the record is coupled to the row, audited.
	a := ts.do("POST", path(k1, "couple"), body, op)
	if a.status != http.StatusOK {
		t.Fatalf("couple: %d %s", a.status, a.body)
	}
	if c := couplingOf(t, ts, k1); !c.Coupled() || c.RowID != row || c.Entity != "account" {
		t.Fatalf("after couple: %+v", c)
	}
	if !audited(t, ts, "couple", "customer/"+k1+" to account "+row.String()) {
		t.Fatal("the couple is not in the audit log")
	}
	// The row is taken: Business Central's message.
	a = ts.do("POST", path(k2, "couple"), body, op)
	want := fmt.Sprintf("Cannot couple customer %s to this account record, because the account record is already coupled to customer %s.", k2, k1)
	if a.status != http.StatusConflict || problemDetail(t, a) != want {
		t.Fatalf("coupling a taken row: %d %s, want 409 %q", a.status, a.body, want)
	}
	// The record is coupled already.
	a = ts.do("POST", path(k1, "couple"), `{"row_id":"`+uuid.NewString()+`"}`, op)
	if a.status != http.StatusConflict || !strings.Contains(problemDetail(t, a), "is already coupled to account "+row.String()) {
		t.Fatalf("coupling a coupled record: %d %s", a.status, a.body)
	}
	if c := couplingOf(t, ts, k2); c.Exists {
		t.Fatalf("a refused couple stored %+v", c)
	}

	// Uncouple: the link goes, the version stays; a second uncouple is refused.
	if a := ts.do("POST", path(k1, "uncouple"), "", op); a.status != http.StatusOK {
		t.Fatalf("uncouple: %d %s", a.status, a.body)
	}
	if c := couplingOf(t, ts, k1); c.Coupled() || c.Status != domain.CouplingUncoupled || c.RowID != uuid.Nil {
		t.Fatalf("after uncouple: %+v", c)
	}
	if a := ts.do("POST", path(k1, "uncouple"), "", op); a.status != http.StatusConflict ||
		problemDetail(t, a) != "The record customer "+k1+" is not coupled to Dataverse." {
		t.Fatalf("uncoupling an uncoupled record: %d %s", a.status, a.body)
	}
	if !audited(t, ts, "uncouple", "customer/"+k1+" from account "+row.String()) {
		t.Fatal("the uncouple is not in the audit log")
	}
	// The row is free again: k2 may have it.
	if a := ts.do("POST", path(k2, "couple"), body, op); a.status != http.StatusOK {
		t.Fatalf("coupling the freed row: %d %s", a.status, a.body)
	}

	// Sync now of a synced record: its newest change in the stream is sent again, marked as a
	// person's retry, and its version set back just below it so that the worker takes it.
	setCoupling(t, ts, k2, domain.Coupling{RowID: row, Entity: "account", Version: 3, Status: domain.CouplingSynced, LastSyncedAt: time.Now()})
	if _, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: events.Subject("customer"),
		Data: changeEvent(t, "customer", k2, 3, map[string]any{"number": k2, "name": "Adatum"})}); err != nil {
		t.Fatal(err)
	}
	a = ts.do("POST", path(k2, "sync"), "", op)
	var res coupling.Result
	if a.status != http.StatusOK || json.Unmarshal([]byte(a.body), &res) != nil || res.Sent == nil || res.Sent.Version != 3 || res.Sent.Sequence == 0 {
		t.Fatalf("sync now: %d %s", a.status, a.body)
	}
	if c := couplingOf(t, ts, k2); c.Version != 2 || c.RowID != row {
		t.Fatalf("after sync now: %+v, want version 2 and the row kept", c)
	}
	last, err := mustStream(t, js).GetLastMsgForSubject(context.Background(), events.Subject("customer"))
	if err != nil {
		t.Fatal(err)
	}
	if last.Sequence == res.Sent.Sequence || last.Header.Get(syncworker.RetryHeader) == "" || last.Header.Get(replay.HeaderResentBy) != "otto" {
		t.Fatalf("the change sent again: sequence %d (first %d), headers %v", last.Sequence, res.Sent.Sequence, last.Header)
	}
	if !audited(t, ts, "sync", "customer/"+k2+": version 3") {
		t.Fatal("the sync now is not in the audit log")
	}

	// A record that synced a newer version than its newest change in the stream (published out
	// of order) is refused: sending the older change again would write older data over newer.
	setCoupling(t, ts, k2, domain.Coupling{RowID: row, Entity: "account", Version: 10, Status: domain.CouplingSynced, LastSyncedAt: time.Now()})
	if _, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: events.Subject("customer"),
		Data: changeEvent(t, "customer", k2, 9, map[string]any{"number": k2, "name": "Older"})}); err != nil {
		t.Fatal(err)
	}
	if a := ts.do("POST", path(k2, "sync"), "", op); a.status != http.StatusConflict {
		t.Fatalf("sync now of a record newer than its stream's newest change: %d %s, want 409", a.status, a.body)
	}
	if c := couplingOf(t, ts, k2); c.Version != 10 {
		t.Fatalf("after a refused sync now: version %d, want 10 kept", c.Version)
	}
}

func mustStream(t *testing.T, js jetstream.JetStream) jetstream.Stream {
	t.Helper()
	s, err := js.Stream(context.Background(), natsjs.ChangesStream)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rowDeleted stores a record whose coupled row was deleted in Dataverse, with its open error
// keeping the change that failed, as the worker and the projector leave it.
func rowDeleted(t *testing.T, ts *testServer) (key string, row uuid.UUID, errorID int64) {
	t.Helper()
	key, row = fmt.Sprintf("DD%d-%s", seeded.Add(1), uuid.NewString()[:6]), uuid.New()
	setCoupling(t, ts, key, domain.Coupling{RowID: row, Entity: "account", Version: 1, Status: domain.CouplingFailed,
		LastErrorKind: domain.KindDestinationDeleted, Failures: 2, Skipped: true})
	v := int64(2)
	ev := domain.ErrorEvent{ID: uuid.NewString(), OccurredAt: time.Now().UTC(), Table: "customer", Key: key, EventVersion: &v,
		EventType: domain.EventUpserted, Event: changeEvent(t, "customer", key, 2, map[string]any{"number": key}),
		Failure: *domain.DestinationDeleted(domain.ChangeEvent{Table: "customer", Key: key}, domain.Mapping{Entity: "account"}, domain.NamedRow{Entity: "account", ID: row}, nil)}
	if err := ts.store.RecordErrorChecked(context.Background(), ev, ""); err != nil {
		t.Fatal(err)
	}
	page, err := ts.store.PageErrors(context.Background(), storage.ErrorFilter{Table: "customer", Key: key, Limit: 10})
	if err != nil || len(page.Errors) != 1 {
		t.Fatalf("the seeded error: %+v, %v", page.Errors, err)
	}
	return key, row, page.Errors[0].ID
}

func TestRestoreAndDeleteCouplingAPI(t *testing.T) {
	ts := newTestServer(t)
	withCouplingActions(t, ts)
	op := "Authorization: Bearer " + operatorToken

	// Restore: the deleted row is forgotten and the failed change replayed, so that the worker
	// creates the row again with the record's id.
	key, row, id := rowDeleted(t, ts)
	a := ts.do("POST", "/api/v1/couplings/customer/"+key+"/restore", "", op)
	var res coupling.Result
	if a.status != http.StatusOK || json.Unmarshal([]byte(a.body), &res) != nil || res.Sent == nil || res.Sent.ErrorID != id || res.Sent.Version != 2 {
		t.Fatalf("restore: %d %s", a.status, a.body)
	}
	if c := couplingOf(t, ts, key); c.RowID != uuid.Nil || c.Skipped || c.Version != 1 {
		t.Fatalf("after restore: %+v, want no row, not skipped, version kept", c)
	}
	if d, err := ts.store.GetError(context.Background(), id); err != nil || d.Status != storage.ErrorReplayed {
		t.Fatalf("the error after restore: %s, %v; want replayed", d.Status, err)
	}
	if !audited(t, ts, "restore", "customer/"+key+": the deleted account "+row.String()) || !audited(t, ts, "replay", fmt.Sprintf("error %d", id)) {
		t.Fatal("the restore and its replay are not in the audit log")
	}
	// A record whose row was not deleted has nothing to restore.
	if a := ts.do("POST", "/api/v1/couplings/customer/"+key+"/restore", "", op); a.status != http.StatusConflict {
		t.Fatalf("restoring again: %d %s", a.status, a.body)
	}

	// Delete coupling: the coupling goes, its error is resolved.
	key, row, id = rowDeleted(t, ts)
	if a := ts.do("DELETE", "/api/v1/couplings/customer/"+key, "", op); a.status != http.StatusOK {
		t.Fatalf("delete coupling: %d %s", a.status, a.body)
	}
	if c := couplingOf(t, ts, key); c.Exists {
		t.Fatalf("after delete coupling: %+v", c)
	}
	if d, _ := ts.store.GetError(context.Background(), id); d.Status != storage.ErrorResolved || d.ResolvedReason == nil ||
		*d.ResolvedReason != "the coupling was deleted by otto" {
		t.Fatalf("the error after delete coupling: %s %v", d.Status, d.ResolvedReason)
	}
	if !audited(t, ts, "delete-coupling", "customer/"+key+" (failed, account "+row.String()+"); 1 errors resolved") {
		t.Fatal("the delete coupling is not in the audit log")
	}
	if a := ts.do("DELETE", "/api/v1/couplings/customer/"+key, "", op); a.status != http.StatusConflict {
		t.Fatalf("deleting a deleted coupling: %d %s", a.status, a.body)
	}
}

// An error's page offers Couple where its advice asks for it: a duplicate, several matches or
// none, while the error is open.
func TestErrorPagesOfferCoupleWhereTheAdviceAsksForIt(t *testing.T) {
	var d pageData
	for kind, want := range map[domain.Kind]bool{domain.KindDuplicateRecord: true, domain.KindMultipleMatches: true,
		domain.KindNoMatch: true, domain.KindAlreadyCoupled: false, domain.KindDestinationDeleted: false} {
		e := storage.StoredError{Class: domain.ClassCoupling, Kind: kind, Status: storage.ErrorOpen}
		if got := d.OffersCouple(e); got != want {
			t.Errorf("%s: offers Couple %v, want %v", kind, got, want)
		}
		e.Status = storage.ErrorResolved
		if d.OffersCouple(e) {
			t.Errorf("%s resolved: offers Couple", kind)
		}
	}
}
