package storagetest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// A preflight error resolves when a check looked at it and no longer finds it, and only then: a
// gap the check still names stays open, so does one the check did not look at (a partial
// check), and so does one seen after the check ran (a later check's).
func testResolvePreflightResolvesTheGapsACheckNoLongerFinds(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	ctx := context.Background()
	run := uuid.NewString()[:8]
	still, gone := "account/prvWrite"+run, "account.name"+run
	t0 := time.Now().UTC().Truncate(time.Millisecond)
	record := func(key string, at time.Time) {
		t.Helper()
		f := domain.MissingPrivilegeGap(domain.Principal{UserID: "u"}, domain.PrivilegeNeed{Entity: "account", Verb: "Write", Tables: []string{"customer"}}, "prvWriteAccount")
		ev := domain.ErrorEvent{ID: "preflight-" + uuid.NewString(), OccurredAt: at, Failure: *f, Table: domain.PreflightTable, Key: key,
			Entity: "account", Stage: domain.PreflightStage}
		if err := s.RecordError(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	status := func(key string) storage.StoredError {
		t.Helper()
		page, err := s.PageErrors(ctx, storage.ErrorFilter{Table: domain.PreflightTable, Key: key, Limit: 10})
		if err != nil || len(page.Errors) != 1 {
			t.Fatalf("errors of %s: %+v, %v; want one", key, page.Errors, err)
		}
		return page.Errors[0]
	}
	keys := []string{still, gone}
	record(still, t0)
	record(gone, t0)
	// A check that did not look at the gap (the ledger down for the coupled currencies, say).
	if err := s.ResolvePreflight(ctx, domain.PreflightChecked{Table: domain.PreflightTable, Gaps: []string{}, Keys: []string{"other"}, At: t0.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	if e := status(gone); e.Status != storage.ErrorOpen {
		t.Fatalf("a gap a check did not look at is %s", e.Status)
	}
	if err := s.ResolvePreflight(ctx, domain.PreflightChecked{Table: domain.PreflightTable, Gaps: []string{still}, Keys: keys, At: t0.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	if e := status(still); e.Status != storage.ErrorOpen {
		t.Fatalf("a gap the check still finds is %s", e.Status)
	}
	if e := status(gone); e.Status != storage.ErrorResolved || e.ResolvedReason == nil || !strings.Contains(*e.ResolvedReason, "preflight check") {
		t.Fatalf("a gap the check no longer finds: %+v", e)
	}
	// Seen again by a later check, it is not resolved by an earlier one that passed.
	record(still, t0.Add(3*time.Second))
	if err := s.ResolvePreflight(ctx, domain.PreflightChecked{Table: domain.PreflightTable, Gaps: []string{}, Keys: keys, At: t0.Add(2 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	if e := status(still); e.Status != storage.ErrorOpen || e.Occurrences != 2 {
		t.Fatalf("after an earlier passing check: %s with %d occurrences; want open with 2", e.Status, e.Occurrences)
	}
	if err := s.ResolvePreflight(ctx, domain.PreflightChecked{Table: domain.PreflightTable, Gaps: []string{}, Keys: keys, At: t0.Add(4 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	if e := status(still); e.Status != storage.ErrorResolved {
		t.Fatalf("after a later passing check: %s", e.Status)
	}
	// An error of a record is never resolved by a check.
	rec := "P" + run
	ev := domain.ErrorEvent{ID: "rec-" + uuid.NewString(), OccurredAt: t0, Failure: domain.Failure{Class: domain.ClassSetup, Kind: domain.KindMissingPrivilege, Message: "m"},
		Table: "customer", Key: rec, Stage: "sync"}
	if err := s.RecordError(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if err := s.ResolvePreflight(ctx, domain.PreflightChecked{Table: domain.PreflightTable, Gaps: []string{}, Keys: append(keys, rec), At: t0.Add(5 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	page, err := s.PageErrors(ctx, storage.ErrorFilter{Table: "customer", Key: rec, Limit: 10})
	if err != nil || len(page.Errors) != 1 || page.Errors[0].Status != storage.ErrorOpen {
		t.Fatalf("a record's error after a check: %+v, %v", page.Errors, err)
	}
}
