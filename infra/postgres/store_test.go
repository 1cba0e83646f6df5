package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/postgres"
	"github.com/dvsync/dvsync/infra/postgres/pgtest"
)

var dbURL string

func TestMain(m *testing.M) { pgtest.Main(m, "store", &dbURL) }

func open(t *testing.T) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), dbURL, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestMigrationsRunConcurrentlyAndTwice(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := postgres.Open(context.Background(), dbURL, 0)
			if err == nil {
				s.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestUnknownCouplingHasNoVersion(t *testing.T) {
	s := open(t)
	c, err := s.Coupling(context.Background(), "customer", "never-seen-"+uuid.NewString())
	if err != nil || c.Exists || c.Version != domain.NoVersion || c.Coupled() {
		t.Fatalf("coupling = %+v, %v", c, err)
	}
}

func TestUpdateCouplingStoresWhatTheClosureReturns(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	row := uuid.New()
	key := "C" + uuid.NewString()[:8]
	err := s.UpdateCoupling(ctx, "customer", key, func(_ context.Context, cur domain.Coupling) (domain.Coupling, error) {
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
	if err := s.UpdateCoupling(ctx, "customer", key, func(context.Context, domain.Coupling) (domain.Coupling, error) {
		return domain.Coupling{Version: 99}, boom
	}); err != boom {
		t.Fatalf("err = %v, want the closure's error", err)
	}
	if err := s.UpdateCoupling(ctx, "customer", key, func(_ context.Context, cur domain.Coupling) (domain.Coupling, error) {
		return domain.Coupling{Version: 99}, domain.ErrUnchanged
	}); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.Coupling(ctx, "customer", key); c.Version != 7 {
		t.Fatalf("version = %d after failed and unchanged updates, want 7", c.Version)
	}
}

// Two stores (as two worker processes) updating one record must run one after the other: each
// closure sees the version the other wrote.
func TestUpdateCouplingSerializesARecordAcrossStores(t *testing.T) {
	a, b := open(t), open(t)
	ctx := context.Background()
	key := "I" + uuid.NewString()[:8]
	const each = 20
	var wg sync.WaitGroup
	var inside, overlaps int32
	var mu sync.Mutex
	for _, s := range []*postgres.Store{a, b} {
		wg.Add(1)
		go func(s *postgres.Store) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				err := s.UpdateCoupling(ctx, "item", key, func(_ context.Context, cur domain.Coupling) (domain.Coupling, error) {
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
				if err != nil {
					t.Error(err)
				}
			}
		}(s)
	}
	wg.Wait()
	c, _ := a.Coupling(ctx, "item", key)
	if want := int64(domain.NoVersion + 2*each); c.Version != want || overlaps != 0 {
		t.Fatalf("version = %d (want %d), overlapping closures = %d (want 0)", c.Version, want, overlaps)
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

func TestLedgerCountsOccurrencesOncePerEventAndResolves(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	key := "C" + uuid.NewString()[:8]               // unique per run: the database outlives -count repetitions
	for _, id := range []string{"e1", "e1", "e2"} { // e1 redelivered
		if err := s.RecordError(ctx, errorEvent(key, id, 3)); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.ListErrors(ctx, postgres.ErrorFilter{Table: "customer", Key: key})
	if err != nil || len(list) != 1 {
		t.Fatalf("errors = %d (%v), want one row per record and kind", len(list), err)
	}
	if e := list[0]; e.Occurrences != 2 || e.Status != postgres.ErrorOpen || string(e.Event) != `{"raw":true}` ||
		e.Details["dependency_key"] != "EUR" {
		t.Fatalf("stored error = %+v", e)
	}
	if err := s.ResolveRecord(ctx, domain.RecordSynced{Table: "customer", Key: key, Version: 4, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	list, _ = s.ListErrors(ctx, postgres.ErrorFilter{Table: "customer", Key: key})
	if list[0].Status != postgres.ErrorResolved || list[0].ResolvedAt == nil {
		t.Fatalf("after the record synced: %+v", list[0])
	}
	// A new failure after resolution opens a new row.
	if err := s.RecordError(ctx, errorEvent(key, "e3", 5)); err != nil {
		t.Fatal(err)
	}
	open, _ := s.ListErrors(ctx, postgres.ErrorFilter{Table: "customer", Key: key, Status: postgres.ErrorOpen})
	if len(open) != 1 || open[0].Occurrences != 1 {
		t.Fatalf("open errors after a new failure = %+v", open)
	}
}

// A value the database cannot hold is the record's fault, not a passing failure: callers must be
// able to tell, so that they report it instead of retrying it for ever.
func TestDataTheDatabaseCannotHoldIsRejectedNotTransient(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	_, err := s.Coupling(ctx, "customer", "C\x00NUL")
	if !errors.Is(err, domain.ErrStoreRejected) {
		t.Fatalf("reading a key with NUL: %v, want ErrStoreRejected", err)
	}
	err = s.UpdateCoupling(ctx, "customer", "ok", func(_ context.Context, cur domain.Coupling) (domain.Coupling, error) {
		return domain.Coupling{Table: "customer", Key: "ok", Entity: "account\x00", Status: domain.CouplingFailed}, nil
	})
	if !errors.Is(err, domain.ErrStoreRejected) {
		t.Fatalf("writing an entity with NUL: %v, want ErrStoreRejected", err)
	}
}
