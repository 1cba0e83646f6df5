package storagetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// coupledTo is a record's coupling to a row of account, as a sync stores it.
func coupledTo(c domain.Coupling, row uuid.UUID) domain.Coupling {
	c.RowID, c.Entity, c.Status, c.Version, c.RowVersion = row, "account", domain.CouplingSynced, 1, `W/"1"`
	return c
}

// rowTaken checks that err is a RowTakenError naming customer/key.
func rowTaken(t *testing.T, what string, err error, row uuid.UUID, key string) {
	t.Helper()
	var taken *domain.RowTakenError
	if !errors.As(err, &taken) || taken.Entity != "account" || taken.Row != row || taken.Other.Table != "customer" || taken.Other.Key != key {
		t.Fatalf("%s: %v (%+v), want the row taken by customer/%s", what, err, taken, key)
	}
}

// Two records (in two stores, as two workers) claiming one row at the same moment: exactly one
// gets it, the other finds it busy; once the winner's coupling is stored, the loser finds the row
// taken by the winner, and nobody can claim it any more.
func testConcurrentRowClaimsHaveOneWinner(t *testing.T, h Harness) {
	stores := []storage.Store{h.Open(t, 0), h.Open(t, 0)}
	ctx := context.Background()
	tag := uuid.NewString()[:8]
	keys := []string{"RA" + tag, "RB" + tag}
	row := uuid.New()
	var claimed, both sync.WaitGroup
	claimed.Add(2)
	both.Add(1)
	start := make(chan struct{})
	results := make([]error, 2)
	updates := make(chan error, 2)
	for i := range keys {
		go func() {
			updates <- stores[i].UpdateCoupling(ctx, "customer", keys[i], func(ctx context.Context, c domain.Coupling, lock domain.RecordLock) (domain.Coupling, error) {
				<-start
				results[i] = lock.ClaimRow(ctx, "account", row)
				claimed.Done()
				both.Wait() // both claims are made while both records are in flight
				if results[i] != nil {
					return c, domain.ErrUnchanged
				}
				return coupledTo(c, row), nil
			})
		}()
	}
	close(start)
	claimed.Wait()
	both.Done()
	for range keys {
		if err := <-updates; err != nil {
			t.Fatal(err)
		}
	}
	winner, loser := -1, -1
	for i, err := range results {
		switch {
		case err == nil:
			winner = i
		case errors.Is(err, domain.ErrRowBusy) && errors.Is(err, domain.ErrRecordBusy):
			loser = i
		default:
			t.Fatalf("claim of %s: %v, want nil or ErrRowBusy", keys[i], err)
		}
	}
	if winner < 0 || loser < 0 {
		t.Fatalf("claims: %v; want exactly one winner", results)
	}
	if c, _ := stores[0].CouplingOfRow(ctx, "account", row); c.Key != keys[winner] {
		t.Fatalf("the row is coupled to %+v, want customer/%s", c, keys[winner])
	}
	// The loser tries again: the row is the winner's now.
	err := stores[loser].UpdateCoupling(ctx, "customer", keys[loser], func(ctx context.Context, c domain.Coupling, lock domain.RecordLock) (domain.Coupling, error) {
		rowTaken(t, "claim of a coupled row", lock.ClaimRow(ctx, "account", row), row, keys[winner])
		return c, domain.ErrUnchanged
	})
	if err != nil {
		t.Fatal(err)
	}
	// The winner's own row is no claim against itself (a redelivery claims it again).
	err = stores[loser].UpdateCoupling(ctx, "customer", keys[winner], func(ctx context.Context, c domain.Coupling, lock domain.RecordLock) (domain.Coupling, error) {
		if err := lock.ClaimRow(ctx, "account", row); err != nil {
			t.Errorf("the coupled record claiming its own row: %v", err)
		}
		return c, domain.ErrUnchanged
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A row claim goes with the record's claim: released without a coupling, the row is free at
// once; its lease run out (a stalled worker), another record retakes it; and the stalled worker's
// late coupling of the row is refused by the unique index, naming the record that has it.
func testRowClaimsGoWithTheRecordClaim(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	ctx := context.Background()
	tag := uuid.NewString()[:8]
	a, b, c := "RC"+tag, "RD"+tag, "RE"+tag
	row := uuid.New()
	claimThen := func(key string, then func(domain.Coupling) (domain.Coupling, error)) error {
		return s.UpdateCoupling(ctx, "customer", key, func(ctx context.Context, cur domain.Coupling, lock domain.RecordLock) (domain.Coupling, error) {
			if err := lock.ClaimRow(ctx, "account", row); err != nil {
				return cur, err
			}
			return then(cur)
		})
	}
	// Released without storing a coupling (the sync failed, nothing changed): free again.
	if err := claimThen(a, func(cur domain.Coupling) (domain.Coupling, error) { return cur, domain.ErrUnchanged }); err != nil {
		t.Fatal(err)
	}
	// Stored as failed without the row: free again.
	if err := claimThen(b, func(cur domain.Coupling) (domain.Coupling, error) {
		cur.Entity, cur.Status, cur.LastErrorKind, cur.Failures = "account", domain.CouplingFailed, domain.KindInvalidData, 1
		return cur, nil
	}); err != nil {
		t.Fatalf("claiming a row released twice: %v", err)
	}
	// A claims the row and stalls past its lease: B retakes it and couples to it; A's late
	// coupling is refused.
	err := claimThen(a, func(cur domain.Coupling) (domain.Coupling, error) {
		h.ExpireClaims(t, a)
		if err := claimThen(c, func(cur domain.Coupling) (domain.Coupling, error) { return coupledTo(cur, row), nil }); err != nil {
			t.Errorf("retaking the row of a claim that ran out: %v", err)
		}
		return coupledTo(cur, row), nil
	})
	rowTaken(t, "the stalled worker's late coupling", err, row, c)
	if got, _ := s.CouplingOfRow(ctx, "account", row); got.Key != c {
		t.Fatalf("the row is coupled to %+v, want customer/%s", got, c)
	}
	if got, _ := s.Coupling(ctx, "customer", a); got.Coupled() {
		t.Fatalf("the stalled record was coupled too: %+v", got)
	}
}

// A claim lost under a stalled worker (its lease ran out and another worker took the record) is
// neither stored nor released when the stalled worker commits, but its row claims go: nothing
// else would ever delete them.
func testALostClaimLeavesNoRowClaim(t *testing.T, h Harness) {
	if h.RowClaims == nil {
		t.Skip("the harness cannot count row claims")
	}
	s, other := h.Open(t, 0), h.Open(t, 0)
	ctx := context.Background()
	key := "RL" + uuid.NewString()[:8]
	row := uuid.New()
	err := s.UpdateCoupling(ctx, "customer", key, func(ctx context.Context, cur domain.Coupling, lock domain.RecordLock) (domain.Coupling, error) {
		if err := lock.ClaimRow(ctx, "account", row); err != nil {
			return cur, err
		}
		h.ExpireClaims(t, key)
		// Another worker takes the record and is done with it.
		if err := other.UpdateCoupling(ctx, "customer", key, func(_ context.Context, c domain.Coupling, _ domain.RecordLock) (domain.Coupling, error) {
			return c, domain.ErrUnchanged
		}); err != nil {
			t.Errorf("the other worker's update of a record whose claim ran out: %v", err)
		}
		return coupledTo(cur, row), nil
	})
	if !errors.Is(err, storage.ErrLockLost) {
		t.Fatalf("the stalled worker's commit: %v, want ErrLockLost", err)
	}
	if n := h.RowClaims(t, key); n != 0 {
		t.Fatalf("%d row claims of customer/%s left after its lost claim's commit; want none", n, key)
	}
	if got, _ := s.Coupling(ctx, "customer", key); got.Coupled() {
		t.Fatalf("the lost claim's coupling was stored: %+v", got)
	}
}

// The unique index refuses a second live coupling of a row, whichever way it comes (a sync's
// commit without a claim, a person's edit), fails only that record when many commit together,
// and lets a row be coupled again once its coupling is no longer live.
func testARowHasOneLiveCoupling(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	ctx := context.Background()
	tag := uuid.NewString()[:8]
	first, second := "RU"+tag, "RV"+tag
	row := uuid.New()
	store := func(key string, row uuid.UUID) error {
		return s.UpdateCoupling(ctx, "customer", key, func(_ context.Context, c domain.Coupling, _ domain.RecordLock) (domain.Coupling, error) {
			return coupledTo(c, row), nil
		})
	}
	if err := store(first, row); err != nil {
		t.Fatal(err)
	}
	rowTaken(t, "a second coupling of the row", store(second, row), row, first)
	if c, _ := s.Coupling(ctx, "customer", second); c.Exists {
		t.Fatalf("the refused coupling was stored: %+v", c)
	}
	// The record is free again at once.
	if err := store(second, uuid.New()); err != nil {
		t.Fatalf("the refused record afterwards: %v", err)
	}

	// Many records committing at once: only the one coupling a taken row fails.
	var wg sync.WaitGroup
	errs := make([]error, 20)
	keys := make([]string, len(errs))
	for i := range errs {
		keys[i] = fmt.Sprintf("RW%s-%d", tag, i)
		target := uuid.New()
		if i == 7 {
			target = row
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = store(keys[i], target)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if i == 7 {
			rowTaken(t, "the batch's coupling of a taken row", err, row, first)
		} else if err != nil {
			t.Fatalf("record %d of the batch: %v", i, err)
		} else if c, _ := s.Coupling(ctx, "customer", keys[i]); !c.Coupled() {
			t.Fatalf("record %d of the batch was not stored: %+v", i, c)
		}
	}

	// A person's edit is refused the same way.
	err := s.EditCoupling(ctx, "customer", second, "ada", "couple", func(_ context.Context, cur domain.Coupling) (storage.CouplingEdit, error) {
		next := coupledTo(cur, row)
		return storage.CouplingEdit{Next: &next, Target: "customer/" + second}, nil
	})
	rowTaken(t, "a person coupling a taken row", err, row, first)

	// Deleted at the source, the first record's coupling is no longer live: the row is free.
	if err := s.UpdateCoupling(ctx, "customer", first, func(_ context.Context, c domain.Coupling, _ domain.RecordLock) (domain.Coupling, error) {
		c.Status, c.Version = domain.CouplingDeleted, 2
		return c, nil
	}); err != nil {
		t.Fatal(err)
	}
	err = s.EditCoupling(ctx, "customer", second, "ada", "couple", func(_ context.Context, cur domain.Coupling) (storage.CouplingEdit, error) {
		next := coupledTo(cur, row)
		return storage.CouplingEdit{Next: &next, Target: "customer/" + second}, nil
	})
	if err != nil {
		t.Fatalf("coupling a row whose coupling is deleted: %v", err)
	}
	if c, _ := s.CouplingOfRow(ctx, "account", row); c.Key != second {
		t.Fatalf("the row is coupled to %+v, want customer/%s", c, second)
	}
}

// A person's Couple claims the row as a sync does: while a worker's sync of another record holds
// a claim on the row, the edit is busy and stores nothing.
func testAnEditWaitsForARowClaimedBySync(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	ctx := context.Background()
	tag := uuid.NewString()[:8]
	worker, person := "RX"+tag, "RY"+tag
	row := uuid.New()
	claimed, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.UpdateCoupling(ctx, "customer", worker, func(ctx context.Context, c domain.Coupling, lock domain.RecordLock) (domain.Coupling, error) {
			err := lock.ClaimRow(ctx, "account", row)
			close(claimed)
			<-release
			if err != nil {
				return c, err
			}
			return c, domain.ErrUnchanged
		})
	}()
	<-claimed
	err := s.EditCoupling(ctx, "customer", person, "ada", "couple", func(_ context.Context, cur domain.Coupling) (storage.CouplingEdit, error) {
		next := coupledTo(cur, row)
		return storage.CouplingEdit{Next: &next, Target: "customer/" + person}, nil
	})
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !errors.Is(err, domain.ErrRowBusy) || !errors.Is(err, domain.ErrRecordBusy) {
		t.Fatalf("coupling a row a sync has claimed: %v, want ErrRowBusy", err)
	}
	if c, _ := s.Coupling(ctx, "customer", person); c.Exists {
		t.Fatalf("the busy edit stored %+v", c)
	}
	// The sync released it without coupling: the person's Couple goes through.
	err = s.EditCoupling(ctx, "customer", person, "ada", "couple", func(_ context.Context, cur domain.Coupling) (storage.CouplingEdit, error) {
		next := coupledTo(cur, row)
		return storage.CouplingEdit{Next: &next, Target: "customer/" + person}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := s.CouplingOfRow(ctx, "account", row); c.Key != person {
		t.Fatalf("the row is coupled to %+v, want customer/%s", c, person)
	}
}
