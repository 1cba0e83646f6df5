package storagetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// Pages follow each other without a gap or a repeat, newest first, and every filter narrows.
func testPagesAndFilters(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	ctx := context.Background()
	table := "tp" + uuid.NewString()[:8] // a table of this test's own, so that filters see only its rows
	at := time.Now().UTC().Truncate(time.Microsecond)
	for i := range 7 {
		ev := errorEvent(fmt.Sprintf("K%d", i), table, 1) // the id unique per run: the database outlives -count repetitions
		ev.Table, ev.OccurredAt = table, at.Add(time.Duration(i)*time.Second)
		if i%2 == 1 {
			ev.Failure = domain.Failure{Class: domain.ClassSetup, Kind: domain.KindMissingPrivilege, Message: "Principal user is missing prvCreateAccount privilege"}
		}
		recordChecked(t, s, ev)
	}
	var seen []string
	f := storage.ErrorFilter{Table: table, Limit: 3}
	for pages := 0; ; pages++ {
		page, err := s.PageErrors(ctx, f)
		if err != nil || pages > 5 {
			t.Fatalf("page %d: %v", pages, err)
		}
		for _, e := range page.Errors {
			seen = append(seen, e.Key)
		}
		if page.Next == "" {
			break
		}
		f.Cursor = page.Next
	}
	if fmt.Sprint(seen) != "[K6 K5 K4 K3 K2 K1 K0]" {
		t.Fatalf("pages of 3 gave %v, want K6 … K0 once each", seen)
	}
	if _, err := s.PageErrors(ctx, storage.ErrorFilter{Cursor: "not-a-cursor"}); !errors.Is(err, storage.ErrBadCursor) {
		t.Fatalf("a made-up cursor: %v, want ErrBadCursor", err)
	}
	count := func(f storage.ErrorFilter) int {
		t.Helper()
		f.Table = table
		list, err := s.ListErrors(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}
	for name, c := range map[string]struct {
		f    storage.ErrorFilter
		want int
	}{
		"class":          {storage.ErrorFilter{Class: domain.ClassSetup}, 3},
		"kind":           {storage.ErrorFilter{Kind: domain.KindDependencyNotCoupled}, 4},
		"key":            {storage.ErrorFilter{Key: "K2"}, 1},
		"text, any case": {storage.ErrorFilter{Text: "PRVCREATEACCOUNT"}, 3},
		"since":          {storage.ErrorFilter{Since: at.Add(5 * time.Second)}, 2},
		"until":          {storage.ErrorFilter{Until: at.Add(2 * time.Second)}, 2},
		"status":         {storage.ErrorFilter{Status: storage.ErrorResolved}, 0},
	} {
		if got := count(c.f); got != c.want {
			t.Errorf("filter by %s: %d errors, want %d", name, got, c.want)
		}
	}
}

// Deleting errors is audited and leaves couplings alone; a deleted error is not found again.
func testDeletesAreAuditedAndKeepCouplings(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	ctx := context.Background()
	key := "D" + uuid.NewString()[:8]
	if err := s.UpdateCoupling(ctx, "customer", key, func(_ context.Context, c domain.Coupling, _ domain.RecordLock) (domain.Coupling, error) {
		c.Version, c.Status, c.RowID = 1, domain.CouplingFailed, uuid.New()
		return c, nil
	}); err != nil {
		t.Fatal(err)
	}
	recordChecked(t, s, errorEvent(key, "e1", 2))
	id := onlyError(t, s, "customer", key).ID
	d, err := s.GetError(ctx, id)
	if err != nil || len(d.History) != 1 || d.History[0].MessageID != key+"-e1" {
		t.Fatalf("detail: history %+v (%v), want the one occurrence", d.History, err)
	}
	if err := s.DeleteError(ctx, id, "otto"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetError(ctx, id); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("a deleted error: %v, want ErrNotFound", err)
	}
	if err := s.DeleteError(ctx, id, "otto"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("deleting it again: %v, want ErrNotFound", err)
	}
	if c, _ := s.Coupling(ctx, "customer", key); !c.Exists || c.Version != 1 {
		t.Fatalf("the coupling after its error was deleted: %+v", c)
	}
	old := errorEvent(key, "e2", 3)
	old.OccurredAt = time.Now().Add(-48 * time.Hour).UTC()
	recordChecked(t, s, old)
	n, err := s.DeleteErrors(ctx, time.Now().Add(-24*time.Hour), "ada")
	if err != nil || n < 1 {
		t.Fatalf("deleting errors older than a day: %d, %v", n, err)
	}
	audit, err := s.Audit(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	var byOtto, byAda bool
	for _, a := range audit {
		byOtto = byOtto || (a.Actor == "otto" && a.Action == "delete" && a.Affected == 1)
		byAda = byAda || (a.Actor == "ada" && a.Action == "delete" && a.Affected == int(n))
	}
	if !byOtto || !byAda {
		t.Fatalf("audit log %+v: want both deletes", audit)
	}
}

// Status sums up couplings and open errors per table; ListCouplings filters them.
func testStatusAndCouplingLists(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	ctx := context.Background()
	table := "ts" + uuid.NewString()[:8]
	for i, st := range []domain.CouplingStatus{domain.CouplingSynced, domain.CouplingSynced, domain.CouplingFailed} {
		key := fmt.Sprintf("Item-%d", i)
		if err := s.UpdateCoupling(ctx, table, key, func(_ context.Context, c domain.Coupling, _ domain.RecordLock) (domain.Coupling, error) {
			c.Version, c.Status, c.Skipped, c.LastSyncedAt = 1, st, st == domain.CouplingFailed, time.Now()
			return c, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	ev := errorEvent("Item-2", table, 1)
	ev.Table = table
	recordChecked(t, s, ev)
	all, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got *storage.TableStatus
	for i := range all {
		if all[i].Table == table {
			got = &all[i]
		}
	}
	if got == nil || got.Synced != 2 || got.Failed != 1 || got.Skipped != 1 || got.OpenErrors["coupling"] != 1 || got.LastSyncedAt == nil {
		t.Fatalf("status of %s: %+v", table, got)
	}
	list, err := s.ListCouplings(ctx, storage.CouplingFilter{Table: table, Skipped: true})
	if err != nil || len(list) != 1 || list[0].Key != "Item-2" {
		t.Fatalf("skipped couplings: %+v (%v)", list, err)
	}
	if list, err = s.ListCouplings(ctx, storage.CouplingFilter{Table: table, Text: "item-1"}); err != nil || len(list) != 1 {
		t.Fatalf("couplings matching item-1 in any case: %+v (%v)", list, err)
	}
}

// A signed-out session stays signed out for every store on the database.
func testEndedSessionsAreShared(t *testing.T, h Harness) {
	a, b := h.Open(t, 0), h.Open(t, 0)
	ctx := context.Background()
	id := uuid.NewString()
	if ended, err := b.SessionEnded(ctx, id); err != nil || ended {
		t.Fatalf("before sign-out: %v %v", ended, err)
	}
	if err := a.EndSession(ctx, id, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if ended, err := b.SessionEnded(ctx, id); err != nil || !ended {
		t.Fatalf("after sign-out: %v %v", ended, err)
	}
	if err := a.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

// CountLedger counts open and replayed errors, not resolved ones, with the first sighting of the
// oldest, and the skipped records by table.
func testCountLedger(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	ctx := context.Background()
	// A kind and a table of this run only: the package's other tests share the database.
	run := uuid.NewString()[:8]
	kind, table := domain.Kind("stats_kind_"+run), "stats"+run
	oldest := time.Now().Add(-time.Hour).UTC().Truncate(time.Microsecond)
	for i, at := range []time.Time{oldest, time.Now().UTC()} {
		key := "K" + run + string(rune('a'+i))
		ev := errorEvent(key, "e", 1)
		ev.Kind, ev.OccurredAt = kind, at
		if err := s.RecordError(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	// A third error of the kind, resolved: not counted.
	resolved := errorEvent("K"+run+"r", "e", 1)
	resolved.Kind, resolved.OccurredAt = kind, oldest.Add(-time.Hour)
	if err := s.RecordError(ctx, resolved); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateCoupling(ctx, "customer", resolved.Key, func(_ context.Context, c domain.Coupling, _ domain.RecordLock) (domain.Coupling, error) {
		c.Version, c.Status, c.RowID, c.LastSyncedAt = 1, domain.CouplingSynced, uuid.New(), time.Now()
		return c, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.ResolveRecord(ctx, domain.RecordSynced{Table: "customer", Key: resolved.Key, Version: 1, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for i, skipped := range []bool{true, true, false} {
		key := "S" + run + string(rune('a'+i))
		if err := s.UpdateCoupling(ctx, table, key, func(_ context.Context, c domain.Coupling, _ domain.RecordLock) (domain.Coupling, error) {
			c.Status, c.Skipped, c.Failures, c.LastErrorKind = domain.CouplingFailed, skipped, 2, kind
			return c, nil
		}); err != nil {
			t.Fatal(err)
		}
	}

	counts, err := s.CountLedger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var mine []storage.OpenErrors
	for _, o := range counts.Open {
		if o.Kind == kind {
			mine = append(mine, o)
		}
	}
	if len(mine) != 1 || mine[0].Class != domain.ClassCoupling || mine[0].Count != 2 || !mine[0].Oldest.Equal(oldest) {
		t.Fatalf("open errors of %s = %+v; want 2 coupling errors, the oldest first seen %s", kind, mine, oldest)
	}
	if n := counts.Skipped[table]; n != 2 {
		t.Fatalf("skipped records of %s = %d, want 2 (all: %v)", table, n, counts.Skipped)
	}
}

// An error stored without details or a call stack, then skipped with details, lists as it should:
// the stored JSON stays an object and a list (before, PostgreSQL kept null and merged it into an
// array that broke every list reading the row).
func testErrorsWithoutDetailsStayReadable(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	key := "J" + uuid.NewString()[:8]
	bare := errorEvent(key, "e1", 1)
	bare.Failure = domain.Failure{Class: domain.ClassSetup, Kind: "unknown", Message: "no pattern matched"}
	bare.CallStack = nil
	recordChecked(t, s, bare)
	skipped := errorEvent(key, "e2", 2)
	skipped.Failure = domain.Failure{Class: domain.ClassSetup, Kind: "unknown", Message: "skipped", Details: map[string]string{"skipped_after": "2"}}
	skipped.Stage = "skipped"
	recordChecked(t, s, skipped)
	e := onlyError(t, s, "customer", key)
	if e.Details["skipped_after"] != "2" || e.Occurrences != 2 {
		t.Fatalf("after a skipped occurrence: details %v, %d occurrences", e.Details, e.Occurrences)
	}
}

// The text filter finds any letter case, accented letters included, and takes % and _ as
// themselves, not as wildcards.
func testTextSearchFoldsCaseAndHasNoWildcards(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	table := "tq" + uuid.NewString()[:8]
	for i, msg := range []string{"Kunde MÜLLER fehlt", "50_% off", "nothing here"} {
		ev := errorEvent(fmt.Sprintf("Q%d", i), table, 1)
		ev.Table, ev.Message = table, msg
		recordChecked(t, s, ev)
	}
	for q, want := range map[string]int{"müller": 1, "%": 1, "_": 1, "nothing": 1, "zzz": 0} {
		list, err := s.ListErrors(context.Background(), storage.ErrorFilter{Table: table, Text: q})
		if err != nil || len(list) != want {
			t.Errorf("text %q: %d errors (%v), want %d", q, len(list), err, want)
		}
	}
	list, err := s.ListCouplings(context.Background(), storage.CouplingFilter{Text: "%"})
	if err != nil || len(list) != 0 {
		t.Errorf("couplings with %% in their key: %d (%v), want none", len(list), err)
	}
}

// Times far from today (a publisher's clock, a made-up date) page and filter as any other: no
// row is lost from a page, and an until filter far in the future takes every row.
func testFarTimesPageAndFilter(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	table := "tf" + uuid.NewString()[:8]
	for i, at := range []time.Time{time.Date(2500, 1, 1, 0, 0, 0, 0, time.UTC), time.Now().UTC(), time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC)} {
		ev := errorEvent(fmt.Sprintf("F%d", i), table, 1)
		ev.Table, ev.OccurredAt = table, at
		recordChecked(t, s, ev)
	}
	ctx := context.Background()
	var seen int
	f := storage.ErrorFilter{Table: table, Limit: 1}
	for pages := 0; pages < 5; pages++ {
		page, err := s.PageErrors(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		seen += len(page.Errors)
		if page.Next == "" {
			break
		}
		f.Cursor = page.Next
	}
	if seen != 3 {
		t.Fatalf("pages of one gave %d of 3 errors", seen)
	}
	list, err := s.ListErrors(ctx, storage.ErrorFilter{Table: table, Until: time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)})
	if err != nil || len(list) != 3 {
		t.Fatalf("until the year 9999: %d errors (%v), want 3", len(list), err)
	}
}
