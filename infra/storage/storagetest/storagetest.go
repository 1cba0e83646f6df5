// Package storagetest is the one test suite every dvsync store passes (storage.Store): PostgreSQL
// and the embedded SQLite store run it from their own tests.
package storagetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// Harness is how the suite reaches a store. Every store Open returns works on one database, as
// the processes of one deployment do; tests keep apart by the keys they use.
type Harness struct {
	// Open opens another store on the test database, closed when the test ends (Close may also
	// be called earlier). claimTTL, when not zero, shortens the lease of its record claims.
	Open func(t *testing.T, claimTTL time.Duration) storage.Store
	// ExpireClaims makes the claims on records with this key run out now, as if their worker had
	// stalled past its lease.
	ExpireClaims func(t *testing.T, key string)
	// RowClaims counts the row claims that records with this key hold, live or dead (nil skips
	// the checks that no row claim is left behind).
	RowClaims func(t *testing.T, key string) int
	// AgeCouplingRuns moves the table's coupling runs' times back by d, as if their process had
	// died that long ago (nil skips the stale-run cases).
	AgeCouplingRuns func(t *testing.T, table string, d time.Duration)
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	for _, tc := range []struct {
		name string
		run  func(*testing.T, Harness)
	}{
		{"UnknownCouplingHasNoVersion", testUnknownCouplingHasNoVersion},
		{"UpdateCouplingStoresWhatTheClosureReturns", testUpdateCouplingStoresWhatTheClosureReturns},
		{"UpdateCouplingSerializesARecordAcrossStores", testUpdateCouplingSerializesARecordAcrossStores},
		{"ConcurrentUpdatesOfManyRecordsAreEachStored", testConcurrentUpdatesOfManyRecordsAreEachStored},
		{"LedgerCountsOccurrencesOncePerEventAndResolves", testLedgerCountsOccurrencesOncePerEventAndResolves},
		{"LedgerKeepsTheNewestChange", testLedgerKeepsTheNewestChange},
		{"ClaimReplayIsWonOnce", testClaimReplayIsWonOnce},
		{"ResolveRecordOnlyUpToTheSyncedVersion", testResolveRecordOnlyUpToTheSyncedVersion},
		{"HostileValuesAreStorable", testHostileValuesAreStorable},
		{"ARecordClaimKnowsWhenItIsLost", testARecordClaimKnowsWhenItIsLost},
		{"StaleReplayDoesNotResolveTheErrorOfANewerChange", testStaleReplayDoesNotResolveTheErrorOfANewerChange},
		{"AReplayThatFailsAgainReopensItsErrorAfterALateOlderOccurrence", testAReplayThatFailsAgainReopensItsErrorAfterALateOlderOccurrence},
		{"AnUnverifiedOccurrenceNeverDisplacesAVerifiedOne", testAnUnverifiedOccurrenceNeverDisplacesAVerifiedOne},
		{"AClaimIsRenewedWhileHeldAndFreedWhenItsWorkerDies", testAClaimIsRenewedWhileHeldAndFreedWhenItsWorkerDies},
		{"CouplingCallsAfterCloseAreRefused", testCouplingCallsAfterCloseAreRefused},
		{"PagesAndFilters", testPagesAndFilters},
		{"DeletesAreAuditedAndKeepCouplings", testDeletesAreAuditedAndKeepCouplings},
		{"StatusAndCouplingLists", testStatusAndCouplingLists},
		{"EndedSessionsAreShared", testEndedSessionsAreShared},
		{"CountLedger", testCountLedger},
		{"ErrorsWithoutDetailsStayReadable", testErrorsWithoutDetailsStayReadable},
		{"TextSearchFoldsCaseAndHasNoWildcards", testTextSearchFoldsCaseAndHasNoWildcards},
		{"FarTimesPageAndFilter", testFarTimesPageAndFilter},
		{"CouplingOfRowFindsTheLiveCoupling", testCouplingOfRowFindsTheLiveCoupling},
		{"EditCouplingStoresRemovesAndAudits", testEditCouplingStoresRemovesAndAudits},
		{"ConcurrentRowClaimsHaveOneWinner", testConcurrentRowClaimsHaveOneWinner},
		{"RowClaimsGoWithTheRecordClaim", testRowClaimsGoWithTheRecordClaim},
		{"ALostClaimLeavesNoRowClaim", testALostClaimLeavesNoRowClaim},
		{"ARowHasOneLiveCoupling", testARowHasOneLiveCoupling},
		{"AnEditWaitsForARowClaimedBySync", testAnEditWaitsForARowClaimedBySync},
		{"ACoupleResolvesOnlyCouplingErrors", testACoupleResolvesOnlyCouplingErrors},
		{"ResolvePreflightResolvesTheGapsACheckNoLongerFinds", testResolvePreflightResolvesTheGapsACheckNoLongerFinds},
		{"RowNameRoundTrips", testRowNameRoundTrips},
		{"PauseResumeAndCatchUpAreStoredAndAudited", testPauseResumeAndCatchUpAreStoredAndAudited},
		{"BacklogPeriodsOpenCountAndEnd", testBacklogPeriodsOpenCountAndEnd},
		{"OneWorkerCountsTheBacklogAtATime", testOneWorkerCountsTheBacklogAtATime},
		{"ChangesInHandAreTheFreshReportsAddedUp", testChangesInHandAreTheFreshReportsAddedUp},
		{"CouplingRunsOnePerTableWithHeartbeats", testCouplingRunsOnePerTableWithHeartbeats},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, h) })
	}
}

func testUnknownCouplingHasNoVersion(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	c, err := s.Coupling(context.Background(), "customer", "never-seen-"+uuid.NewString())
	if err != nil || c.Exists || c.Version != domain.NoVersion || c.Coupled() {
		t.Fatalf("coupling = %+v, %v", c, err)
	}
}

func testUpdateCouplingStoresWhatTheClosureReturns(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	ctx := context.Background()
	row := uuid.New()
	key := "C" + uuid.NewString()[:8]
	err := s.UpdateCoupling(ctx, "customer", key, func(_ context.Context, cur domain.Coupling, _ domain.RecordLock) (domain.Coupling, error) {
		return domain.Coupling{Table: "customer", Key: key, RowID: row, Entity: "account", Version: 7, RowVersion: `W/"42"`,
			Status: domain.CouplingSynced, LastSyncedAt: time.Now()}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := s.Coupling(ctx, "customer", key)
	if !c.Exists || c.RowID != row || c.Version != 7 || !c.Coupled() || c.RowVersion != `W/"42"` {
		t.Fatalf("stored coupling = %+v", c)
	}
	// An error from the closure stores nothing; ErrUnchanged stores nothing and is no error.
	boom := fmt.Errorf("boom")
	if err := s.UpdateCoupling(ctx, "customer", key, func(context.Context, domain.Coupling, domain.RecordLock) (domain.Coupling, error) {
		return domain.Coupling{Version: 99}, boom
	}); err != boom {
		t.Fatalf("err = %v, want the closure's error", err)
	}
	if err := s.UpdateCoupling(ctx, "customer", key, func(_ context.Context, cur domain.Coupling, _ domain.RecordLock) (domain.Coupling, error) {
		return domain.Coupling{Version: 99}, domain.ErrUnchanged
	}); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.Coupling(ctx, "customer", key); c.Version != 7 {
		t.Fatalf("version = %d after failed and unchanged updates, want 7", c.Version)
	}
}

// Two stores (as two worker processes) updating one record run one after the other: each
// closure sees the version the other wrote. One that finds the record held is told so at once
// (ErrRecordBusy) and tries again.
func testUpdateCouplingSerializesARecordAcrossStores(t *testing.T, h Harness) {
	a, b := h.Open(t, 0), h.Open(t, 0)
	ctx := context.Background()
	key := "I" + uuid.NewString()[:8]
	const each = 20
	var wg sync.WaitGroup
	var inside, overlaps, busy int32
	var mu sync.Mutex
	for _, s := range []storage.Store{a, b} {
		wg.Add(1)
		go func(s storage.Store) {
			defer wg.Done()
			for i := 0; i < each; {
				err := s.UpdateCoupling(ctx, "item", key, func(_ context.Context, cur domain.Coupling, _ domain.RecordLock) (domain.Coupling, error) {
					mu.Lock()
					inside++
					if inside > 1 {
						overlaps++
					}
					mu.Unlock()
					next := cur
					next.Version++
					next.Status = domain.CouplingSynced
					mu.Lock()
					inside--
					mu.Unlock()
					return next, nil
				})
				switch {
				case errors.Is(err, domain.ErrRecordBusy):
					mu.Lock()
					busy++
					mu.Unlock()
				case err != nil:
					t.Error(err)
					return
				default:
					i++
				}
			}
		}(s)
	}
	wg.Wait()
	c, _ := a.Coupling(ctx, "item", key)
	if want := int64(domain.NoVersion + 2*each); c.Version != want || overlaps != 0 {
		t.Fatalf("version = %d (want %d), overlapping closures = %d (want 0), busy answers %d", c.Version, want, overlaps, busy)
	}
}

// Many lanes updating different records at once: every closure's result is stored, and each saw
// its own record.
func testConcurrentUpdatesOfManyRecordsAreEachStored(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	ctx := context.Background()
	prefix := "M" + uuid.NewString()[:8] + "-"
	const records = 300
	var wg sync.WaitGroup
	for i := range records {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("%s%d", prefix, i)
			err := s.UpdateCoupling(ctx, "item", key, func(_ context.Context, cur domain.Coupling, _ domain.RecordLock) (domain.Coupling, error) {
				if cur.Key != key || cur.Exists {
					return cur, fmt.Errorf("closure for %s got %+v", key, cur)
				}
				return domain.Coupling{Table: "item", Key: key, Version: int64(i), Status: domain.CouplingSynced, RowVersion: fmt.Sprintf(`W/"%d"`, i)}, nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for i := range records {
		c, err := s.Coupling(ctx, "item", fmt.Sprintf("%s%d", prefix, i))
		if err != nil || c.Version != int64(i) || c.RowVersion != fmt.Sprintf(`W/"%d"`, i) || c.Status != domain.CouplingSynced {
			t.Fatalf("record %d: %+v, %v", i, c, err)
		}
	}
}

func errorEvent(key, id string, version int64) domain.ErrorEvent {
	return domain.ErrorEvent{
		ID: key + "-" + id, OccurredAt: time.Now().UTC(), Table: "customer", Key: key, EventVersion: &version,
		Failure: *domain.DependencyNotCoupled(domain.ChangeEvent{Table: "customer", Key: key},
			domain.Lookup{Source: "currencyCode", Table: "currency", Caption: "Currency Code"}, "EUR"),
		Event: []byte(`{"raw":true}`), Stage: "sync",
	}
}

func testLedgerCountsOccurrencesOncePerEventAndResolves(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	ctx := context.Background()
	key := "C" + uuid.NewString()[:8]               // unique per run: the database outlives -count repetitions
	for _, id := range []string{"e1", "e1", "e2"} { // e1 redelivered
		if err := s.RecordError(ctx, errorEvent(key, id, 3)); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.ListErrors(ctx, storage.ErrorFilter{Table: "customer", Key: key})
	if err != nil || len(list) != 1 {
		t.Fatalf("errors = %d (%v), want one row per record and kind", len(list), err)
	}
	if e := list[0]; e.Occurrences != 2 || e.Status != storage.ErrorOpen || string(e.Event) != `{"raw":true}` ||
		e.Details["dependency_key"] != "EUR" {
		t.Fatalf("stored error = %+v", e)
	}
	// The worker records the coupling, then announces the sync.
	if err := s.UpdateCoupling(ctx, "customer", key, func(_ context.Context, c domain.Coupling, _ domain.RecordLock) (domain.Coupling, error) {
		c.Version, c.Status, c.RowID, c.LastSyncedAt = 4, domain.CouplingSynced, uuid.New(), time.Now()
		return c, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.ResolveRecord(ctx, domain.RecordSynced{Table: "customer", Key: key, Version: 4, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	list, _ = s.ListErrors(ctx, storage.ErrorFilter{Table: "customer", Key: key})
	if list[0].Status != storage.ErrorResolved || list[0].ResolvedAt == nil {
		t.Fatalf("after the record synced: %+v", list[0])
	}
	// A new failure after resolution opens a new row.
	if err := s.RecordError(ctx, errorEvent(key, "e3", 5)); err != nil {
		t.Fatal(err)
	}
	open, _ := s.ListErrors(ctx, storage.ErrorFilter{Table: "customer", Key: key, Status: storage.ErrorOpen})
	if len(open) != 1 || open[0].Occurrences != 1 {
		t.Fatalf("open errors after a new failure = %+v", open)
	}
}

// recordChecked stores an error as the projector does once its change was read back.
func recordChecked(t *testing.T, s storage.Store, ev domain.ErrorEvent) {
	t.Helper()
	if err := s.RecordErrorChecked(context.Background(), ev, ""); err != nil {
		t.Fatal(err)
	}
}

func onlyError(t *testing.T, s storage.Store, table, key string) storage.StoredError {
	t.Helper()
	list, err := s.ListErrors(context.Background(), storage.ErrorFilter{Table: table, Key: key})
	if err != nil || len(list) != 1 {
		t.Fatalf("errors of %s/%s: %d (%v), want one", table, key, len(list), err)
	}
	return list[0]
}

// The newest change wins wherever the error keeps one: an older version's error arriving later
// only counts; the same version failing again (a replay) describes the error as it is now; a
// skipped record's newer change replaces the change and keeps the description.
func testLedgerKeepsTheNewestChange(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	key := "N" + uuid.NewString()[:8]
	at := time.Now().UTC().Truncate(time.Millisecond)
	ev := func(id string, v int64, stage, message string, seen time.Time) domain.ErrorEvent {
		e := errorEvent(key, id, v)
		e.Event, e.Stage, e.Message, e.OccurredAt = []byte(fmt.Sprintf(`{"v":%d}`, v)), stage, message, seen
		e.Delivery = domain.Delivery{Subject: "dvsync.changes.customer", Stream: "DVSYNC_CHANGES", Sequence: uint64(v)}
		return e
	}
	recordChecked(t, s, ev("v5", 5, "sync", "v5 failed", at))
	recordChecked(t, s, ev("v4", 4, "sync", "v4 failed", at.Add(time.Second)))
	e := onlyError(t, s, "customer", key)
	if e.Occurrences != 2 || e.EventVersion == nil || *e.EventVersion != 5 || string(e.Event) != `{"v":5}` || e.Message != "v5 failed" ||
		e.Delivery.Sequence != 5 || !e.LastSeen.Equal(at.Add(time.Second)) {
		t.Fatalf("after v5 then v4: %d occurrences, %s, %q, seq %d, last seen %s; want v5 kept and both counted",
			e.Occurrences, e.Event, e.Message, e.Delivery.Sequence, e.LastSeen)
	}
	recordChecked(t, s, ev("v5-again", 5, "sync", "v5 failed again", at.Add(2*time.Second)))
	if e := onlyError(t, s, "customer", key); e.Message != "v5 failed again" || e.Occurrences != 3 {
		t.Fatalf("the same version failing again: %q, %d occurrences", e.Message, e.Occurrences)
	}
	recordChecked(t, s, ev("v3-skipped", 3, "skipped", "skipped", at.Add(3*time.Second)))
	recordChecked(t, s, ev("v6-skipped", 6, "skipped", "skipped", at.Add(4*time.Second)))
	if e := onlyError(t, s, "customer", key); string(e.Event) != `{"v":6}` || e.Message != "v5 failed again" || e.Occurrences != 5 {
		t.Fatalf("after skipped changes v3 and v6: %s, %q, %d occurrences; want v6 with the error's own description", e.Event, e.Message, e.Occurrences)
	}
}

// A replay claim is one statement: the first wins, and every other request, at once or later,
// loses until the claim is released, expires, or a newer occurrence reopens the error.
func testClaimReplayIsWonOnce(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	ctx := context.Background()
	key := "R" + uuid.NewString()[:8]
	recordChecked(t, s, errorEvent(key, "e1", 3))
	id := onlyError(t, s, "customer", key).ID

	first, err := s.ClaimReplay(ctx, id)
	if err != nil || first.Attempt != 1 || string(first.Event) != `{"raw":true}` {
		t.Fatalf("first claim: %+v %v", first, err)
	}
	if _, err := s.ClaimReplay(ctx, id); !errors.Is(err, storage.ErrAlreadyReplaying) {
		t.Fatalf("a second claim before the first was finished: %v, want ErrAlreadyReplaying", err)
	}
	var wg sync.WaitGroup
	var won atomic.Int32
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.ClaimReplay(ctx, id); err == nil {
				won.Add(1)
			} else if !errors.Is(err, storage.ErrAlreadyReplaying) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if won.Load() != 0 {
		t.Fatalf("%d concurrent claims won a claimed error", won.Load())
	}
	if err := s.ReleaseReplay(ctx, first); err != nil {
		t.Fatal(err)
	}
	second, err := s.ClaimReplay(ctx, id)
	if err != nil || second.Attempt != 2 {
		t.Fatalf("a claim after the release: %+v %v", second, err)
	}
	// The replayed change failed again before the replay was recorded: the new occurrence reopens
	// the error and ends the claim, and the late FinishReplay does not mark it replayed.
	recordChecked(t, s, errorEvent(key, "e2", 3))
	if err := s.FinishReplay(ctx, second, "m-2", "otto", "published"); err != nil {
		t.Fatal(err)
	}
	if e := onlyError(t, s, "customer", key); e.Status != storage.ErrorOpen {
		t.Fatalf("after a new occurrence and a late finish: %s, want open", e.Status)
	}
	if third, err := s.ClaimReplay(ctx, id); err != nil || third.Attempt != 3 {
		t.Fatalf("a claim after the error reopened: %+v %v", third, err)
	}
}

// A resolution is a hint: it resolves only up to the version the couplings table says synced,
// so that a forged one cannot close the error of a change that never synced.
func testResolveRecordOnlyUpToTheSyncedVersion(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	ctx := context.Background()
	key := "F" + uuid.NewString()[:8]
	recordChecked(t, s, errorEvent(key, "old", 2))
	setup := errorEvent(key, "setup", 5)
	setup.Failure = domain.Failure{Class: domain.ClassSetup, Kind: domain.KindMissingPrivilege, Message: "missing prvWriteAccount"}
	recordChecked(t, s, setup)
	if err := s.ResolveRecord(ctx, domain.RecordSynced{Table: "customer", Key: key, Version: 100, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	open, _ := s.ListErrors(ctx, storage.ErrorFilter{Table: "customer", Key: key, Status: storage.ErrorOpen})
	if len(open) != 2 {
		t.Fatalf("a resolution of a record that never synced closed %d of 2 errors", 2-len(open))
	}
	if err := s.UpdateCoupling(ctx, "customer", key, func(_ context.Context, c domain.Coupling, _ domain.RecordLock) (domain.Coupling, error) {
		c.Version, c.Status, c.RowID, c.LastSyncedAt = 3, domain.CouplingSynced, uuid.New(), time.Now()
		return c, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.ResolveRecord(ctx, domain.RecordSynced{Table: "customer", Key: key, Version: 100, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	open, _ = s.ListErrors(ctx, storage.ErrorFilter{Table: "customer", Key: key, Status: storage.ErrorOpen})
	if len(open) != 1 || open[0].Kind != domain.KindMissingPrivilege {
		t.Fatalf("open after version 3 synced and a resolution naming 100: %+v; want only the setup error of version 5", open)
	}
	resolved, _ := s.ListErrors(ctx, storage.ErrorFilter{Table: "customer", Key: key, Status: storage.ErrorResolved})
	if len(resolved) != 1 || resolved[0].ResolvedReason == nil || *resolved[0].ResolvedReason != "the record synced version 3" {
		t.Fatalf("resolved: %+v", resolved)
	}
}

// Values no index entry or text column could hold are stored: a key and a lookup value far over
// a btree entry's limit, NULs and invalid UTF-8; the records waiting on a long key are found.
func testHostileValuesAreStorable(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	ctx := context.Background()
	long := "L" + incompressible(20000) // PostgreSQL compresses index entries: a repeated letter would fit
	ev := errorEvent(long, "e1", 1)
	ev.Failure = *domain.DependencyNotCoupled(domain.ChangeEvent{Table: "customer", Key: long},
		domain.Lookup{Source: "currencyCode", Table: "currency"}, long)
	ev.EventID, ev.Message = "id\x00", "bad \xff utf-8 and a NUL \x00"
	ev.EventHeaders = map[string][]string{"X-Note\x00": {"a\x00b"}}
	recordChecked(t, s, ev)
	ids, err := s.WaitingOn(ctx, "currency", long, 10)
	if err != nil || len(ids) != 1 {
		t.Fatalf("waiting on a long key: %v %v", ids, err)
	}
	d, err := s.GetError(ctx, ids[0])
	if err != nil || len(d.Key) > 9000 || !strings.HasPrefix(d.Key, long[:1000]) || !utf8.ValidString(d.Message) || strings.Contains(d.Message, "\x00") {
		t.Fatalf("stored %d-byte key, message %q (%v)", len(d.Key), d.Message, err)
	}
	// A second long key with the same start is another record.
	other := long[:len(long)-1] + "j"
	recordChecked(t, s, errorEvent(other, "e1", 1))
	if e := onlyError(t, s, "customer", d.Key); e.ID != d.ID {
		t.Fatal("two long keys with one start share an error")
	}
	if err := s.ResolveRecord(ctx, domain.RecordSynced{Table: "customer", Key: long, Version: 1}); err != nil {
		t.Fatal(err)
	}
}

// incompressible is n random hex digits.
func incompressible(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// A claim whose lease ran out and that another worker took is lost: Held says so before the
// worker would overwrite a row, and what the closure returns is not stored.
func testARecordClaimKnowsWhenItIsLost(t *testing.T, h Harness) {
	s, other := h.Open(t, 0), h.Open(t, 0)
	ctx := context.Background()
	key := "L" + uuid.NewString()[:8]
	var before, after, busy, taken error
	err := s.UpdateCoupling(ctx, "customer", key, func(ctx context.Context, cur domain.Coupling, lock domain.RecordLock) (domain.Coupling, error) {
		before = lock.Held(ctx)
		busy = other.UpdateCoupling(ctx, "customer", key, func(context.Context, domain.Coupling, domain.RecordLock) (domain.Coupling, error) {
			return domain.Coupling{}, errors.New("ran while the record was claimed")
		})
		// The lease runs out (the worker stalled longer than it lasts) and another worker takes the record.
		h.ExpireClaims(t, key)
		taken = other.UpdateCoupling(ctx, "customer", key, func(_ context.Context, cur domain.Coupling, _ domain.RecordLock) (domain.Coupling, error) {
			cur.Version, cur.Status = 9, domain.CouplingSynced
			return cur, nil
		})
		after = lock.Held(ctx)
		cur.Version, cur.Status = 5, domain.CouplingSynced
		return cur, nil
	})
	if before != nil || !errors.Is(busy, domain.ErrRecordBusy) || taken != nil || !errors.Is(after, storage.ErrLockLost) {
		t.Fatalf("held before: %v; other worker meanwhile: %v, after the lease ran out: %v; held after: %v", before, busy, taken, after)
	}
	if !errors.Is(err, storage.ErrLockLost) {
		t.Fatalf("UpdateCoupling with a lost claim returned %v, want ErrLockLost", err)
	}
	if c, _ := s.Coupling(ctx, "customer", key); c.Version != 9 {
		t.Fatalf("version %d stored, want 9 (the new holder's); the lost claim must store nothing", c.Version)
	}
}

// A replay that finds a newer version synced (stale) resolves the error only while its claim
// holds: when a newer change failed meanwhile and reopened the error (ending the claim), the
// error keeps that change, open. Before, the stale outcome resolved it and the newer change was
// lost.
func testStaleReplayDoesNotResolveTheErrorOfANewerChange(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	ctx := context.Background()
	key := "S" + uuid.NewString()[:8]
	at := time.Now().UTC().Truncate(time.Millisecond)
	ev := func(id string, v int64, seen time.Time) domain.ErrorEvent {
		e := errorEvent(key, id, v)
		e.Event, e.OccurredAt = []byte(fmt.Sprintf(`{"v":%d}`, v)), seen
		return e
	}
	recordChecked(t, s, ev("v4", 4, at))
	id := onlyError(t, s, "customer", key).ID
	claim, err := s.ClaimReplay(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	// While the replay reads the coupling (v5 synced, so v4 is stale), v6 fails the same way.
	recordChecked(t, s, ev("v6", 6, at.Add(time.Second)))
	if err := s.FinishReplay(ctx, claim, "", "otto", "stale"); err != nil {
		t.Fatal(err)
	}
	e := onlyError(t, s, "customer", key)
	if e.Status != storage.ErrorOpen || e.EventVersion == nil || *e.EventVersion != 6 {
		t.Fatalf("after a stale replay of v4 finished behind v6's error: %s, keeping %s; want open, keeping v6", e.Status, e.Event)
	}
	if d, err := s.GetError(ctx, id); err != nil || len(d.ReplayLog) != 1 || d.ReplayLog[0].Outcome != "stale" {
		t.Fatalf("replay log %+v (%v): want the stale replay recorded", d.ReplayLog, err)
	}
	// Without a newer occurrence the stale outcome does resolve it.
	claim, err = s.ClaimReplay(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.FinishReplay(ctx, claim, "", "otto", "stale"); err != nil {
		t.Fatal(err)
	}
	if e := onlyError(t, s, "customer", key); e.Status != storage.ErrorResolved {
		t.Fatalf("a stale replay holding its claim: %s, want resolved", e.Status)
	}
}

// A replayed change that fails again reopens its error although a late occurrence of an older
// version was counted after the replay and carries a later time: the tie between two
// occurrences of the kept version is broken by when the kept one was seen, not by last_seen.
// Before, the replay's failure was "not newer", the error stayed replayed, and no dependency
// replay (which takes open errors) sent it again.
func testAReplayThatFailsAgainReopensItsErrorAfterALateOlderOccurrence(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	ctx := context.Background()
	key := "T" + uuid.NewString()[:8]
	at := time.Now().UTC().Truncate(time.Millisecond)
	ev := func(id string, v int64, message string, seen time.Time) domain.ErrorEvent {
		e := errorEvent(key, id, v)
		e.Event, e.Message, e.OccurredAt = []byte(fmt.Sprintf(`{"v":%d}`, v)), message, seen
		return e
	}
	recordChecked(t, s, ev("v5", 5, "v5 failed", at))
	id := onlyError(t, s, "customer", key).ID
	claim, err := s.ClaimReplay(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.FinishReplay(ctx, claim, "m-1", "otto", "published"); err != nil {
		t.Fatal(err)
	}
	// The replay of v5 fails at t+1s; a redelivered v4, stamped t+2s, reaches the ledger first.
	recordChecked(t, s, ev("v4-late", 4, "v4 failed", at.Add(2*time.Second)))
	recordChecked(t, s, ev("v5-replay", 5, "v5 failed again", at.Add(time.Second)))
	e := onlyError(t, s, "customer", key)
	if e.Status != storage.ErrorOpen || e.Message != "v5 failed again" || *e.EventVersion != 5 || e.Occurrences != 3 {
		t.Fatalf("after the replay of v5 failed again: %s, %q, v%d, %d occurrences; want open, described by the replay's failure, v5, 3",
			e.Status, e.Message, *e.EventVersion, e.Occurrences)
	}
	if ids, err := s.WaitingOn(ctx, "currency", "EUR", 1000); err != nil || !slices.Contains(ids, id) {
		t.Fatalf("waiting on EUR: %v (%v), want the reopened error %d among them", ids, err, id)
	}
	if _, err := s.ClaimReplay(ctx, id); err != nil {
		t.Fatalf("the reopened error cannot be replayed at once: %v", err)
	}
}

// An occurrence whose change was not read back from the changes stream (a forged error event,
// with any version it likes) never displaces one whose change was: the error keeps its real,
// replayable change, and records waiting for a dependency stay replayed by themselves. A
// read-back change of a newer version does displace an unverified one.
func testAnUnverifiedOccurrenceNeverDisplacesAVerifiedOne(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	ctx := context.Background()
	key := "U" + uuid.NewString()[:8]
	ev := func(id string, v int64) domain.ErrorEvent {
		e := errorEvent(key, id, v)
		e.Event = []byte(fmt.Sprintf(`{"v":%d}`, v))
		return e
	}
	recordChecked(t, s, ev("v5", 5))
	id := onlyError(t, s, "customer", key).ID
	if err := s.RecordError(ctx, ev("forged", 1<<62)); err != nil { // not read back
		t.Fatal(err)
	}
	e := onlyError(t, s, "customer", key)
	if e.NotReplayable != nil || *e.EventVersion != 5 || string(e.Event) != `{"v":5}` || e.Occurrences != 2 {
		t.Fatalf("after a forged occurrence of version 2^62: keeping v%d %s, not replayable %v, %d occurrences; want v5, replayable, 2",
			*e.EventVersion, e.Event, e.NotReplayable, e.Occurrences)
	}
	if ids, err := s.WaitingOn(ctx, "currency", "EUR", 1000); err != nil || !slices.Contains(ids, id) {
		t.Fatalf("waiting on EUR: %v (%v), want error %d still replayable by itself", ids, err, id)
	}

	other := "V" + uuid.NewString()[:8]
	unverified := errorEvent(other, "v3", 3)
	if err := s.RecordError(ctx, unverified); err != nil {
		t.Fatal(err)
	}
	verified := errorEvent(other, "v4", 4)
	verified.Event = []byte(`{"v":4}`)
	recordChecked(t, s, verified)
	if e := onlyError(t, s, "customer", other); e.NotReplayable != nil || *e.EventVersion != 4 {
		t.Fatalf("a read-back v4 after an unverified v3: keeping v%d, not replayable %v; want v4, replayable", *e.EventVersion, e.NotReplayable)
	}
}

// A claim lasts while its worker lives, however long the Dataverse call takes: it is renewed.
// A worker that dies (its store stops renewing) leaves the record to the others once the lease
// runs out.
func testAClaimIsRenewedWhileHeldAndFreedWhenItsWorkerDies(t *testing.T, h Harness) {
	const ttl = 1500 * time.Millisecond
	s, other := h.Open(t, ttl), h.Open(t, ttl)
	ctx := context.Background()
	key := "R" + uuid.NewString()[:8]
	var meanwhile, held error
	err := s.UpdateCoupling(ctx, "customer", key, func(ctx context.Context, cur domain.Coupling, lock domain.RecordLock) (domain.Coupling, error) {
		time.Sleep(3 * ttl) // a slow Dataverse call, not synchronisation: the lease must outlive it
		meanwhile = other.UpdateCoupling(ctx, "customer", key, func(context.Context, domain.Coupling, domain.RecordLock) (domain.Coupling, error) {
			return domain.Coupling{}, errors.New("ran while the record was claimed")
		})
		held = lock.Held(ctx)
		cur.Version, cur.Status = 3, domain.CouplingSynced
		return cur, nil
	})
	if err != nil || held != nil || !errors.Is(meanwhile, domain.ErrRecordBusy) {
		t.Fatalf("after three leases: stored %v, held %v, other worker %v (want nil, nil, ErrRecordBusy)", err, held, meanwhile)
	}

	// A worker claims the record and dies: its store closes without releasing the claim.
	dying := h.Open(t, ttl)
	claimed, release, gone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(gone)
		_ = dying.UpdateCoupling(ctx, "customer", key, func(context.Context, domain.Coupling, domain.RecordLock) (domain.Coupling, error) {
			close(claimed)
			<-release
			return domain.Coupling{}, errors.New("died")
		})
	}()
	<-claimed
	dying.Close() // its renewals stop, as the process's would; the claim stays behind
	deadline := time.Now().Add(10 * ttl)
	var got error = domain.ErrRecordBusy
	for errors.Is(got, domain.ErrRecordBusy) && time.Now().Before(deadline) {
		got = other.UpdateCoupling(ctx, "customer", key, func(_ context.Context, cur domain.Coupling, _ domain.RecordLock) (domain.Coupling, error) {
			cur.Version = 4
			return cur, nil
		})
		if errors.Is(got, domain.ErrRecordBusy) {
			time.Sleep(100 * time.Millisecond) // polling a condition with a deadline
		}
	}
	close(release)
	if got != nil {
		t.Fatalf("the record stayed busy after its holder stopped renewing: %v", got)
	}
}

func testCouplingCallsAfterCloseAreRefused(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	s.Close()
	if _, err := s.Coupling(context.Background(), "customer", "C1"); err == nil {
		t.Fatal("Coupling after Close answered")
	}
}
