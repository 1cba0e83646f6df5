package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// A person's Couple of a skipped record that failed to couple (no_match) clears its skip state,
// last error kind and failure count, and resolves its open coupling errors; its setup error
// stays open, since a coupling does not fix it.
func TestCoupleClearsTheSkipAndResolvesOnlyCouplingErrors(t *testing.T) {
	ts := newTestServer(t)
	withCouplingActions(t, ts)
	ctx := context.Background()
	key := fmt.Sprintf("CC%d-%s", seeded.Add(1), uuid.NewString()[:6])
	setCoupling(t, ts, key, domain.Coupling{Entity: "account", Version: domain.NoVersion, Status: domain.CouplingFailed,
		LastErrorKind: domain.KindNoMatch, Failures: 2, Skipped: true})
	m := domain.DefaultMappings()["customer"]
	v := int64(1)
	for _, f := range []*domain.Failure{domain.NoMatch(domain.ChangeEvent{Table: "customer", Key: key}, m, "accountnumber = "+key), domain.MappingMissing("customer")} {
		ev := domain.ErrorEvent{ID: uuid.NewString(), OccurredAt: time.Now().UTC(), Table: "customer", Key: key, EventVersion: &v,
			EventType: domain.EventUpserted, Event: changeEvent(t, "customer", key, 1, map[string]any{"number": key}), Failure: *f}
		if err := ts.store.RecordErrorChecked(ctx, ev, ""); err != nil {
			t.Fatal(err)
		}
	}
	row := uuid.New()
	a := ts.do("POST", "/api/v1/couplings/customer/"+url.PathEscape(key)+"/couple", `{"row_id":"`+row.String()+`"}`, "Authorization: Bearer "+operatorToken)
	if a.status != http.StatusOK {
		t.Fatalf("couple: %d %s", a.status, a.body)
	}
	if c := couplingOf(t, ts, key); !c.Coupled() || c.RowID != row || c.Skipped || c.LastErrorKind != "" || c.Failures != 0 {
		t.Fatalf("after couple: %+v; want coupled, not skipped, no last error, no failures", c)
	}
	list, err := ts.store.ListErrors(ctx, storage.ErrorFilter{Table: "customer", Key: key})
	if err != nil || len(list) != 2 {
		t.Fatalf("errors: %d, %v", len(list), err)
	}
	for _, e := range list {
		want := storage.ErrorOpen
		if e.Class == domain.ClassCoupling {
			want = storage.ErrorResolved
		}
		if e.Status != want {
			t.Fatalf("%s error %s after couple: %s, want %s", e.Class, e.Kind, e.Status, want)
		}
	}
	if !audited(t, ts, "couple", "customer/"+key+" to account "+row.String()+"; 1 errors resolved") {
		t.Fatal("the couple and its resolved error are not in the audit log")
	}
}

// A person's Couple of a row that a worker's sync of another record has just claimed is busy,
// saying so, and couples nothing.
func TestCoupleOfARowAWorkerIsCouplingIsBusy(t *testing.T) {
	ts := newTestServer(t)
	withCouplingActions(t, ts)
	ctx := context.Background()
	n := seeded.Add(1)
	worker, person := fmt.Sprintf("CW%d-w", n), fmt.Sprintf("CW%d-p", n)
	row := uuid.New()
	claimed, release := make(chan error, 1), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- ts.store.UpdateCoupling(ctx, "customer", worker, func(ctx context.Context, c domain.Coupling, lock domain.RecordLock) (domain.Coupling, error) {
			claimed <- lock.ClaimRow(ctx, "account", row)
			<-release
			return c, domain.ErrUnchanged
		})
	}()
	if err := <-claimed; err != nil {
		t.Fatal(err)
	}
	a := ts.do("POST", "/api/v1/couplings/customer/"+url.PathEscape(person)+"/couple", `{"row_id":"`+row.String()+`"}`, "Authorization: Bearer "+operatorToken)
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if want := "a worker is coupling another record to this Dataverse row right now; try again in a moment"; a.status != http.StatusConflict || problemDetail(t, a) != want {
		t.Fatalf("couple of a claimed row: %d %s, want 409 %q", a.status, a.body, want)
	}
	if c := couplingOf(t, ts, person); c.Exists {
		t.Fatalf("a busy couple stored %+v", c)
	}
}
